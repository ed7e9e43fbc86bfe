//! Native testing support: build posts, run a stage the way the host would,
//! and read back what it logged and counted. Works with plain `cargo test` on
//! the host target (the host imports are stubs there).
//!
//! [`run`] goes through the same ABI as the host: the posts are laid out as
//! one batch holding only the fields the stage declares (so reading an
//! undeclared field panics here, naming it), and the stage's answers are read
//! back from the results it returns.

use crate::bindings::traptor::plugin::types as wit;
use crate::{Field, Fields, Outcome, Point, Stage};

pub use crate::host::{LogRecord, counters, logs};

/// The fields the stage's code read during the last [`run`] on this thread:
/// what it touches, to compare with what it declares (a declared field never
/// read is sent to it for nothing):
/// `assert_eq!(fields_read(), MyStage::describe().reads)`.
pub fn fields_read() -> Fields {
    crate::post::fields_read()
}

/// A post for a test, every field owned; build it with [`PostBuilder`].
#[derive(Debug, Clone, PartialEq)]
pub struct TestPost {
    pub raw: String,
    pub id: String,
    pub source: String,
    pub text: String,
    pub author_id: Option<String>,
    pub author_handle: Option<String>,
    pub lang: Option<String>,
    pub created_at: Option<String>,
    pub hashtags: Vec<String>,
    pub mentions: Vec<String>,
    pub urls: Vec<String>,
    pub cashtags: Vec<String>,
    pub coordinates: Option<Point>,
    pub is_retweet: bool,
    pub is_reply: bool,
    pub is_quote: bool,
    /// (id, tag, value, rule type)
    pub matched_rules: Vec<(String, Option<String>, String, String)>,
}

/// `init` with `config_json`, then `process` the batch, as the host does:
/// one outcome per post (`Keep` for each post the stage did not name).
pub fn run<T: Stage>(config_json: &str, batch: &[TestPost]) -> Result<Vec<Outcome>, String> {
    crate::runtime::reset();
    crate::post::forget_reads();
    let reads = crate::runtime::init::<T>(config_json)?;
    let results = crate::runtime::process::<T>(encode(batch, reads));
    decode(&results, batch.len())
}

/// The batch the host would send a stage that reads `reads`.
pub fn encode(posts: &[TestPost], reads: Fields) -> wit::Batch {
    let mut b = wit::Batch {
        count: posts.len() as u32,
        data: Vec::new(),
        posts: Vec::new(),
        strings: Vec::new(),
        rule_refs: Vec::new(),
        rules: Vec::new(),
    };
    if !reads.is_empty() {
        for p in posts {
            let post = encode_post(&mut b, p, reads);
            b.posts.push(post);
        }
    }
    b
}

fn span(data: &mut Vec<u8>, s: &str) -> wit::Span {
    let start = data.len() as u32;
    data.extend_from_slice(s.as_bytes());
    wit::Span { start, len: s.len() as u32 }
}

fn list(b: &mut wit::Batch, items: &[String], yes: bool) -> wit::Range {
    let first = b.strings.len() as u32;
    if yes {
        for s in items {
            let sp = span(&mut b.data, s);
            b.strings.push(sp);
        }
    }
    wit::Range { first, count: b.strings.len() as u32 - first }
}

fn encode_post(b: &mut wit::Batch, p: &TestPost, reads: Fields) -> wit::Post {
    let has = |f| reads.contains(f);
    let empty = wit::Span { start: 0, len: 0 };
    let one = |b: &mut wit::Batch, f, s: &str| if has(f) { span(&mut b.data, s) } else { empty };
    let opt = |b: &mut wit::Batch, f, s: &Option<String>| {
        if has(f) { s.as_deref().map(|s| span(&mut b.data, s)) } else { None }
    };
    let raw = one(b, Fields::RAW, &p.raw);
    let id = one(b, Fields::ID, &p.id);
    let source = one(b, Fields::SOURCE, &p.source);
    let text = one(b, Fields::TEXT, &p.text);
    let author_id = opt(b, Fields::AUTHOR, &p.author_id);
    let author_handle = opt(b, Fields::AUTHOR, &p.author_handle);
    let lang = opt(b, Fields::LANG, &p.lang);
    let created_at = opt(b, Fields::CREATED_AT, &p.created_at);
    let hashtags = list(b, &p.hashtags, has(Fields::HASHTAGS));
    let mentions = list(b, &p.mentions, has(Fields::MENTIONS));
    let urls = list(b, &p.urls, has(Fields::URLS));
    let cashtags = list(b, &p.cashtags, has(Fields::CASHTAGS));
    let first = b.rule_refs.len() as u32;
    if has(Fields::MATCHED_RULES) {
        for (rid, tag, value, rule_type) in &p.matched_rules {
            let m = wit::MatchedRule {
                id: span(&mut b.data, rid),
                tag: tag.as_deref().map(|t| span(&mut b.data, t)),
                value: span(&mut b.data, value),
                rule_type: span(&mut b.data, rule_type),
            };
            b.rule_refs.push(b.rules.len() as u32);
            b.rules.push(m);
        }
    }
    let kinds = has(Fields::KINDS);
    wit::Post {
        raw,
        id,
        source,
        text,
        author_id,
        author_handle,
        lang,
        created_at,
        hashtags,
        mentions,
        urls,
        cashtags,
        coordinates: if has(Fields::COORDINATES) { p.coordinates } else { None },
        is_retweet: kinds && p.is_retweet,
        is_reply: kinds && p.is_reply,
        is_quote: kinds && p.is_quote,
        matched_rules: wit::Range { first, count: b.rule_refs.len() as u32 - first },
    }
}

/// One outcome per post from a stage's results, checked as the host checks
/// them (each post named at most once, spans inside the buffer, an
/// enrichment a JSON object).
pub fn decode(results: &wit::Results, posts: usize) -> Result<Vec<Outcome>, String> {
    let mut out = vec![Outcome::Keep; posts];
    let mut named = vec![false; posts];
    for c in &results.changes {
        let i = c.post as usize;
        if i >= posts || std::mem::replace(&mut named[i], true) {
            return Err(format!("the results name post {i} out of range or twice"));
        }
        let start = c.text.start as usize;
        let text = results
            .data
            .get(start..start + c.text.len as usize)
            .and_then(|b| std::str::from_utf8(b).ok())
            .ok_or_else(|| format!("post {i}: text span outside the results or not UTF-8"))?;
        out[i] = match c.action {
            wit::Action::Drop => Outcome::Drop(text.to_owned()),
            wit::Action::Error => Outcome::Error(text.to_owned()),
            wit::Action::Enrich => {
                let Ordered(fields) = serde_json::from_str(text)
                    .map_err(|e| format!("post {i}: the enrichment is not a JSON object ({e}): {text}"))?;
                Outcome::Enrich(fields.into_iter().map(|(name, v)| Field { name, value: v.to_string() }).collect())
            }
        };
    }
    Ok(out)
}

/// A JSON object's members in their order.
struct Ordered(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Ordered, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Ordered, A::Error> {
                let mut v = Vec::new();
                while let Some(entry) = m.next_entry()? {
                    v.push(entry);
                }
                Ok(Ordered(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// Builds a [`TestPost`] with sensible defaults.
#[derive(Debug, Clone)]
pub struct PostBuilder(TestPost);

impl PostBuilder {
    pub fn new(id: &str, text: &str) -> PostBuilder {
        PostBuilder(TestPost {
            raw: String::new(),
            id: id.to_owned(),
            source: "twitter-v1".to_owned(),
            text: text.to_owned(),
            author_id: None,
            author_handle: None,
            lang: None,
            created_at: None,
            hashtags: Vec::new(),
            mentions: Vec::new(),
            urls: Vec::new(),
            cashtags: Vec::new(),
            coordinates: None,
            is_retweet: false,
            is_reply: false,
            is_quote: false,
            matched_rules: Vec::new(),
        })
    }
    pub fn raw(mut self, json: &str) -> Self {
        self.0.raw = json.to_owned();
        self
    }
    pub fn source(mut self, source: &str) -> Self {
        self.0.source = source.to_owned();
        self
    }
    pub fn lang(mut self, lang: &str) -> Self {
        self.0.lang = Some(lang.to_owned());
        self
    }
    pub fn created_at(mut self, rfc3339: &str) -> Self {
        self.0.created_at = Some(rfc3339.to_owned());
        self
    }
    pub fn author(mut self, id: &str, handle: &str) -> Self {
        self.0.author_id = Some(id.to_owned());
        self.0.author_handle = Some(handle.to_owned());
        self
    }
    pub fn hashtags(mut self, tags: &[&str]) -> Self {
        self.0.hashtags = tags.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn mentions(mut self, handles: &[&str]) -> Self {
        self.0.mentions = handles.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn urls(mut self, urls: &[&str]) -> Self {
        self.0.urls = urls.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn cashtags(mut self, tags: &[&str]) -> Self {
        self.0.cashtags = tags.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn coordinates(mut self, lng: f64, lat: f64) -> Self {
        self.0.coordinates = Some(Point { lng, lat });
        self
    }
    pub fn retweet(mut self) -> Self {
        self.0.is_retweet = true;
        self
    }
    pub fn reply(mut self) -> Self {
        self.0.is_reply = true;
        self
    }
    pub fn quote(mut self) -> Self {
        self.0.is_quote = true;
        self
    }
    pub fn rule(mut self, id: &str, value: &str) -> Self {
        self.0.matched_rules.push((id.to_owned(), None, value.to_owned(), "track".to_owned()));
        self
    }
    pub fn tagged_rule(mut self, id: &str, tag: &str, value: &str, rule_type: &str) -> Self {
        self.0.matched_rules.push((id.to_owned(), Some(tag.to_owned()), value.to_owned(), rule_type.to_owned()));
        self
    }
    pub fn build(self) -> TestPost {
        self.0
    }
}
