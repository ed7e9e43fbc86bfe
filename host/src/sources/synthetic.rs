//! The `synthetic` source: realistic Twitter v1.1 posts from a seeded generator.
//!
//! It is the README demo and the benchmarks' input, so it exercises everything
//! the matcher reads: users drawn from a skewed pool (a few are very active),
//! entities with code-point indices, replies, native retweets (with the
//! retweeted post nested), quotes, extended tweets (`truncated` text plus
//! `extended_tweet.full_text`), places with bounding boxes, exact coordinates,
//! HTML-escaped text and non-ASCII words. The same seed gives the same posts.
//!
//! The user pool does not depend on the seed: user `i` has id
//! [`user_id`]`(i)`, so rule files can follow known users.

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{
    BatchTx, Batching, Pacer, RunSource, Source, SourceComponent, SourceContext, SourceError, SourceFuture,
    SourceSummary, blocking, sleep_unless_cancelled,
};
use crate::batch::Batcher;
use crate::component::Problems;
use crate::post::Format;

/// A small, fast, seedable generator (SplitMix64; Steele, Lea & Flood 2014).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * n as f64) as usize % n.max(1)
    }
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
    /// Skewed towards 0: a few users post most.
    pub fn skewed(&mut self, n: usize) -> usize {
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((u * u * u) * n as f64) as usize % n.max(1)
    }
}

/// Number of distinct users in the pool.
pub const USERS: usize = 5000;

/// Id of pool user `i` (stable across seeds and versions).
pub fn user_id(i: usize) -> u64 {
    1_000_000 + i as u64 * 7919
}

const WORDS: &[&str] = &[
    "the",
    "a",
    "and",
    "of",
    "to",
    "in",
    "is",
    "it",
    "for",
    "on",
    "with",
    "this",
    "that",
    "my",
    "your",
    "new",
    "just",
    "love",
    "happy",
    "great",
    "today",
    "morning",
    "night",
    "coffee",
    "music",
    "game",
    "team",
    "win",
    "rain",
    "sun",
    "city",
    "train",
    "late",
    "again",
    "best",
    "ever",
    "really",
    "people",
    "world",
    "news",
    "watch",
    "live",
    "now",
    "think",
    "know",
    "can't",
    "don't",
    "it's",
    "we're",
    "Twitter's",
    "weekend",
    "birthday",
    "summer",
    "winter",
    "election",
    "vote",
    "market",
    "stocks",
    "crypto",
    "rust",
    "python",
    "data",
    "cloud",
    "storm",
    "flood",
    "earthquake",
    "concert",
    "festival",
    "football",
    "soccer",
    "basketball",
    "pizza",
    "tacos",
    "ramen",
    "book",
    "movie",
    "trailer",
    "launch",
    "update",
    "release",
    "bug",
    "fix",
    "deploy",
    "climate",
    "energy",
    "solar",
    "health",
    "doctor",
    "school",
    "café",
    "naïve",
    "señor",
    "über",
    "touché",
    "Москва",
    "привет",
    "東京",
    "ラーメン",
    "서울",
    "مرحبا",
    "नमस्ते",
    "😀",
    "🎉",
    "🔥",
    "❤️",
    "👍",
    "...",
    "!!",
    "?",
    "&",
    "<3",
    "—",
    "“quoted”",
    "(really)",
    "well,",
    "yes!",
    "no.",
];

const HASHTAGS: &[&str] = &[
    "happy",
    "love",
    "news",
    "breaking",
    "music",
    "football",
    "summer",
    "rustlang",
    "python",
    "datascience",
    "climate",
    "election2024",
    "coffee",
    "tbt",
    "photography",
    "travel",
    "foodie",
    "東京",
    "café",
    "MondayMotivation",
    "AI",
];

const DOMAINS: &[&str] = &[
    "example.com",
    "www.example.org",
    "news.example.net",
    "blog.rust-lang.org",
    "github.com",
    "youtube.com",
    "bbc.co.uk",
    "nytimes.com",
    "twitter.com",
    "medium.com",
];

const CASHTAGS: &[&str] = &["AAPL", "TSLA", "BTC", "MSFT", "GOOG"];

/// (name, full name, country code, west, south, east, north)
const PLACES: &[(&str, &str, &str, f64, f64, f64, f64)] = &[
    ("San Francisco", "San Francisco, CA", "US", -122.514926, 37.708075, -122.357031, 37.833238),
    ("Sunnyvale", "Sunnyvale, CA", "US", -122.065206, 37.330068, -121.982475, 37.426726),
    ("Manhattan", "Manhattan, NY", "US", -74.026675, 40.683935, -73.910408, 40.877483),
    ("London", "London, England", "GB", -0.510375, 51.28676, 0.334015, 51.691874),
    ("Paris", "Paris, France", "FR", 2.224101, 48.815573, 2.469920, 48.902145),
    ("Tokyo", "Tokyo, Japan", "JP", 139.563, 35.528, 139.918, 35.817),
    ("Moscow", "Moscow, Russia", "RU", 37.319, 55.489, 37.967, 55.958),
    ("São Paulo", "São Paulo, Brazil", "BR", -46.826, -24.008, -46.365, -23.357),
    ("Sydney", "Sydney, New South Wales", "AU", 150.520, -34.118, 151.343, -33.578),
    ("Lagos", "Lagos, Nigeria", "NG", 3.098, 6.393, 3.696, 6.703),
];

const SYLLABLES: &[&str] = &[
    "ka", "ri", "to", "mo", "la", "zen", "bit", "sky", "rain", "dev", "pix", "nova", "jo", "lu", "max", "ana", "kim",
    "ola", "ray", "sol",
];

const MONTHS: &[&str] = &["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const DAYS: &[&str] = &["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

/// v1.1 `created_at` for seconds since the epoch (UTC).
pub fn twitter_time(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{} {} {:02} {:02}:{:02}:{:02} +0000 {}",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        d,
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        y
    )
}

/// Days since 1970-01-01 to (year, month, day) — H. Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn screen_name(i: usize) -> String {
    let mut r = Rng::new(i as u64 * 31 + 7);
    let mut s = String::new();
    for _ in 0..2 + r.below(2) {
        let syllable: &&str = r.pick(SYLLABLES);
        s.push_str(syllable);
    }
    if r.chance(0.5) {
        s.push('_');
    }
    s.push_str(&(i % 1000).to_string());
    s
}

fn user(i: usize, now: i64) -> Value {
    let mut r = Rng::new(i as u64 * 131 + 17);
    let name = screen_name(i);
    let place = r.pick(PLACES);
    json!({
        "id": user_id(i),
        "id_str": user_id(i).to_string(),
        "name": format!("{} {}", r.pick(SYLLABLES), r.pick(SYLLABLES)).to_uppercase(),
        "screen_name": name,
        "location": place.1,
        "url": null,
        "description": format!("{} {} {} — {}", r.pick(WORDS), r.pick(WORDS), r.pick(WORDS), r.pick(WORDS)),
        "protected": false,
        "verified": i < 50,
        "followers_count": 1_000_000 / (i as u64 + 1),
        "friends_count": 50 + r.below(2000),
        "listed_count": r.below(100),
        "favourites_count": r.below(50_000),
        "statuses_count": 100 + r.below(100_000),
        "created_at": twitter_time(now - 86_400 * (100 + r.below(4000)) as i64),
        "utc_offset": null,
        "time_zone": null,
        "geo_enabled": r.chance(0.3),
        "lang": null,
        "contributors_enabled": false,
        "is_translator": false,
        "profile_background_color": "C0DEED",
        "profile_image_url": format!("http://pbs.twimg.com/profile_images/{}/avatar_normal.jpg", user_id(i)),
        "profile_image_url_https": format!("https://pbs.twimg.com/profile_images/{}/avatar_normal.jpg", user_id(i)),
        "profile_link_color": "1DA1F2",
        "profile_text_color": "333333",
        "profile_use_background_image": true,
        "default_profile": r.chance(0.6),
        "default_profile_image": false,
        "following": null,
        "follow_request_sent": null,
        "notifications": null
    })
}

/// Text with its entities, built piece by piece so indices are exact.
#[derive(Default)]
struct TextBuilder {
    text: String,
    chars: usize,
    hashtags: Vec<Value>,
    mentions: Vec<Value>,
    urls: Vec<Value>,
    symbols: Vec<Value>,
}

impl TextBuilder {
    fn push(&mut self, s: &str) -> [usize; 2] {
        if !self.text.is_empty() && !self.text.ends_with(' ') {
            self.text.push(' ');
            self.chars += 1;
        }
        let start = self.chars;
        self.text.push_str(s);
        self.chars += s.chars().count();
        [start, self.chars]
    }
    fn word(&mut self, w: &str) {
        // v1.1 text is HTML-escaped.
        let escaped = w.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        self.push(&escaped);
    }
    fn mention(&mut self, i: usize) {
        let name = screen_name(i);
        let idx = self.push(&format!("@{name}"));
        self.mentions.push(json!({"screen_name": name, "name": name.to_uppercase(), "id": user_id(i), "id_str": user_id(i).to_string(), "indices": idx}));
    }
    fn hashtag(&mut self, t: &str) {
        let idx = self.push(&format!("#{t}"));
        self.hashtags.push(json!({"text": t, "indices": idx}));
    }
    fn cashtag(&mut self, t: &str) {
        let idx = self.push(&format!("${t}"));
        self.symbols.push(json!({"text": t, "indices": idx}));
    }
    fn url(&mut self, r: &mut Rng) {
        let code: String = (0..10)
            .map(|_| char::from(b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"[r.below(56)]))
            .collect();
        let tco = format!("https://t.co/{code}");
        let domain = r.pick(DOMAINS);
        let path =
            format!("{}/{}-{}", r.pick(&["news", "post", "watch", "2024", "p"]), r.pick(WORDS_ASCII), r.below(10_000));
        let expanded = format!("https://{domain}/{path}");
        let bare = domain.trim_start_matches("www.");
        let display = if bare.len() + path.len() > 25 {
            let full = format!("{bare}/{path}");
            format!("{}…", full.chars().take(24).collect::<String>())
        } else {
            format!("{bare}/{path}")
        };
        let idx = self.push(&tco);
        self.urls.push(json!({"url": tco, "expanded_url": expanded, "display_url": display, "indices": idx}));
    }
    fn entities(&self) -> Value {
        json!({"hashtags": self.hashtags, "urls": self.urls, "user_mentions": self.mentions, "symbols": self.symbols})
    }
}

const WORDS_ASCII: &[&str] = &["story", "video", "update", "report", "photos", "live", "thread", "review"];

/// Generates posts; see the module docs.
#[derive(Debug, Clone)]
pub struct Generator {
    rng: Rng,
    next_id: u64,
    now: i64,
}

impl Generator {
    pub fn new(seed: u64) -> Generator {
        Generator {
            rng: Rng::new(seed),
            // Snowflake-sized ids (> 2^53, as real ones: only id_str is exact).
            next_id: 1_700_000_000_000_000_000 + (seed % 1_000_000) * 1_000_000_000,
            // 2024-03-01T00:00:00Z
            now: 1_709_251_200,
        }
    }

    fn body(&mut self, b: &mut TextBuilder, words: usize) {
        for _ in 0..words {
            let roll = self.rng.below(100);
            match roll {
                0..=5 => {
                    let t = *self.rng.pick(HASHTAGS);
                    b.hashtag(t);
                }
                6..=8 => {
                    let u = self.rng.skewed(USERS);
                    b.mention(u);
                }
                9 => {
                    let c = *self.rng.pick(CASHTAGS);
                    b.cashtag(c);
                }
                _ => {
                    let w = *self.rng.pick(WORDS);
                    b.word(w);
                }
            }
        }
    }

    /// A fresh post (never a retweet) by `author` with `words` words.
    fn original(&mut self, author: usize, words: usize) -> Value {
        let id = self.next_id;
        self.next_id += 1 + self.rng.below(1000) as u64;
        self.now += self.rng.below(3) as i64;
        let mut b = TextBuilder::default();
        let mut reply_to = None;
        if self.rng.chance(0.2) {
            let to = self.rng.skewed(USERS);
            b.mention(to);
            reply_to = Some(to);
        }
        self.body(&mut b, words);
        if self.rng.chance(0.3) {
            b.url(&mut self.rng);
        }
        let lang = if b.text.chars().any(|c| ('\u{3040}'..='\u{30ff}').contains(&c)) { "ja" } else { "en" };
        let mut post = json!({
            "created_at": twitter_time(self.now),
            "id": id,
            "id_str": id.to_string(),
            "text": "",
            "source": "<a href=\"http://twitter.com/download/iphone\" rel=\"nofollow\">Twitter for iPhone</a>",
            "truncated": false,
            "in_reply_to_status_id": null,
            "in_reply_to_status_id_str": null,
            "in_reply_to_user_id": null,
            "in_reply_to_user_id_str": null,
            "in_reply_to_screen_name": null,
            "user": user(author, self.now),
            "geo": null,
            "coordinates": null,
            "place": null,
            "contributors": null,
            "is_quote_status": false,
            "quote_count": 0,
            "reply_count": 0,
            "retweet_count": 0,
            "favorite_count": 0,
            "entities": {},
            "favorited": false,
            "retweeted": false,
            "filter_level": "low",
            "lang": lang,
            "timestamp_ms": (self.now * 1000).to_string(),
        });
        if let Some(to) = reply_to {
            let sid = id - 1 - self.rng.below(1_000_000) as u64;
            post["in_reply_to_status_id"] = json!(sid);
            post["in_reply_to_status_id_str"] = json!(sid.to_string());
            post["in_reply_to_user_id"] = json!(user_id(to));
            post["in_reply_to_user_id_str"] = json!(user_id(to).to_string());
            post["in_reply_to_screen_name"] = json!(screen_name(to));
        }
        set_text(&mut post, &b, id);
        self.place(&mut post);
        post
    }

    /// One post in ten has a place; three of those, exact coordinates in it.
    fn place(&mut self, post: &mut Value) {
        if self.rng.chance(0.1) {
            let p = *self.rng.pick(PLACES);
            post["place"] = json!({
                "id": format!("{:016x}", self.rng.next_u64()),
                "url": "https://api.twitter.com/1.1/geo/id/place.json",
                "place_type": "city",
                "name": p.0,
                "full_name": p.1,
                "country_code": p.2,
                "country": p.2,
                "bounding_box": {"type": "Polygon", "coordinates": [[[p.3, p.4], [p.3, p.6], [p.5, p.6], [p.5, p.4]]]},
                "attributes": {}
            });
            if self.rng.chance(0.3) {
                let lng = p.3 + (p.5 - p.3) * (self.rng.below(1000) as f64 / 1000.0);
                let lat = p.4 + (p.6 - p.4) * (self.rng.below(1000) as f64 / 1000.0);
                post["coordinates"] = json!({"type": "Point", "coordinates": [lng, lat]});
                post["geo"] = json!({"type": "Point", "coordinates": [lat, lng]});
            }
        }
    }

    /// The next post as one JSON line (no newline).
    pub fn next_post(&mut self) -> Vec<u8> {
        let author = self.rng.skewed(USERS);
        let roll = self.rng.below(100);
        let words = if self.rng.chance(0.15) { 25 + self.rng.below(15) } else { 5 + self.rng.below(15) };
        let post = if roll < 20 {
            // Native retweet: "RT @orig: text" by the retweeter, original nested.
            let orig_author = self.rng.skewed(USERS);
            let orig = self.original(orig_author, words);
            let mut rt = self.original(author, 0);
            let text = format!("RT @{}: {}", screen_name(orig_author), orig["text"].as_str().unwrap_or(""));
            let text: String = if text.chars().count() > 140 {
                format!("{}…", text.chars().take(139).collect::<String>())
            } else {
                text
            };
            let name = screen_name(orig_author);
            rt["text"] = json!(text);
            rt["truncated"] = json!(false);
            rt["in_reply_to_status_id"] = Value::Null;
            rt["in_reply_to_status_id_str"] = Value::Null;
            rt["in_reply_to_user_id"] = Value::Null;
            rt["in_reply_to_user_id_str"] = Value::Null;
            rt["in_reply_to_screen_name"] = Value::Null;
            rt["entities"] = json!({"hashtags": [], "urls": [], "symbols": [], "user_mentions": [
                {"screen_name": name, "name": name.to_uppercase(), "id": user_id(orig_author), "id_str": user_id(orig_author).to_string(), "indices": [3, 4 + name.chars().count()]}
            ]});
            if let Some(obj) = rt.as_object_mut() {
                obj.remove("extended_tweet");
                obj.insert("place".into(), Value::Null);
                obj.insert("coordinates".into(), Value::Null);
                obj.insert("geo".into(), Value::Null);
            }
            rt["retweeted_status"] = orig;
            rt
        } else if roll < 30 {
            let q_author = self.rng.skewed(USERS);
            let quoted = self.original(q_author, words);
            let n = 3 + self.rng.below(8);
            let mut q = self.original(author, n);
            q["is_quote_status"] = json!(true);
            q["quoted_status_id"] = quoted["id"].clone();
            q["quoted_status_id_str"] = quoted["id_str"].clone();
            q["quoted_status"] = quoted;
            q
        } else {
            self.original(author, words)
        };
        serde_json::to_vec(&post).unwrap_or_default()
    }
}

/// `[source]` with `type = "synthetic"`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticConfig {
    /// How many posts; absent means without end.
    #[serde(default)]
    pub count: Option<u64>,
    /// Posts per second; 0 (the default) generates as fast as possible.
    #[serde(default)]
    pub rate: f64,
    /// Seed of the generator: the same seed gives the same posts.
    #[serde(default)]
    pub seed: u64,
}

impl SourceComponent for SyntheticConfig {
    fn check(&self, p: &mut Problems<'_>) {
        p.rate("rate", self.rate);
        if self.count == Some(0) {
            p.add("count", "must be ≥ 1 (leave it out for no end)");
        }
    }

    fn format(&self) -> Format {
        Format::TwitterV1
    }

    fn build(&self, cx: &SourceContext) -> Result<Source, SourceError> {
        let s = Synthetic { count: self.count, rate: self.rate, seed: self.seed, batching: cx.batching };
        Ok(Source::new(s, Format::TwitterV1))
    }
}

/// The running `synthetic` source.
#[derive(Debug)]
pub struct Synthetic {
    pub count: Option<u64>,
    pub rate: f64,
    pub seed: u64,
    pub batching: Batching,
}

impl RunSource for Synthetic {
    fn name(&self) -> String {
        "synthetic".into()
    }

    fn run(self: Box<Self>, out: BatchTx, shutdown: CancellationToken) -> SourceFuture {
        blocking(move || Ok(self.generate(&out, &shutdown)))
    }
}

impl Synthetic {
    fn generate(&self, out: &BatchTx, shutdown: &CancellationToken) -> SourceSummary {
        let mut generator = Generator::new(self.seed);
        let mut batcher = Batcher::new(self.batching.max_records);
        let mut pacer = Pacer::new(self.rate);
        let mut summary = SourceSummary::default();
        while self.count.is_none_or(|c| summary.records < c) && !shutdown.is_cancelled() {
            if let Some(wait) = pacer.wait() {
                // Adaptive batching: nothing more is ready, so what is held
                // goes now (full batches form only when records come faster).
                if let Some(b) = batcher.flush()
                    && out.send_blocking(b).is_err()
                {
                    return summary;
                }
                if !sleep_unless_cancelled(wait, shutdown) {
                    break;
                }
            }
            let post = generator.next_post();
            summary.records += 1;
            summary.bytes += post.len() as u64;
            if let Some(b) = batcher.push(&post, summary.records)
                && out.send_blocking(b).is_err()
            {
                return summary;
            }
        }
        if let Some(b) = batcher.flush() {
            let _ = out.send_blocking(b);
        }
        summary
    }
}

/// The post's text and entities; over 140 characters, compatibility mode: a
/// truncated text with a link to the full post, the full one in
/// `extended_tweet`.
fn set_text(post: &mut Value, b: &TextBuilder, id: u64) {
    if b.chars > 140 {
        // Compatibility mode: truncated text with a link to the full post.
        let short: String = b.text.chars().take(115).collect();
        let link = format!("https://t.co/{}", id % 10_000_000_000);
        let text = format!("{short}… {link}");
        let start = short.chars().count() + 2;
        post["text"] = json!(text);
        post["truncated"] = json!(true);
        let visible = |v: &Vec<Value>| -> Vec<Value> {
            v.iter().filter(|e| e["indices"][1].as_u64().is_some_and(|end| end <= 115)).cloned().collect()
        };
        post["entities"] = json!({
            "hashtags": visible(&b.hashtags),
            "urls": [{"url": link, "expanded_url": format!("https://twitter.com/i/web/status/{id}"), "display_url": format!("twitter.com/i/web/status/{}…", id / 1_000_000_000_000), "indices": [start, start + 23]}],
            "user_mentions": visible(&b.mentions),
            "symbols": visible(&b.symbols),
        });
        post["extended_tweet"] = json!({
            "full_text": b.text,
            "display_text_range": [0, b.chars],
            "entities": b.entities(),
        });
    } else {
        post["text"] = json!(b.text);
        post["entities"] = b.entities();
    }
}

#[cfg(test)]
#[path = "synthetic_tests.rs"]
mod tests;
