//! The `twitter_v1_filter` source: Twitter API v1.1 `POST statuses/filter`,
//! for endpoints and archives that speak that protocol.
//!
//! * Parameters are built from the collector's rules as the original traptor
//!   built them ([`filter_params`]): track phrases lower-cased, hashtag rules
//!   `#`-prefixed, de-duplicated, sorted, comma-joined; follow ids; location
//!   boxes; each list capped at the API's limits (beyond is reported, not sent).
//! * Signed with OAuth 1.0a (HMAC-SHA1, `oauth1-request`); `stall_warnings=true`;
//!   gzip; `delimited=length` framing (a decimal byte count line before each
//!   message) or plain lines.
//! * No data and no keep-alive for 90 s is a stall. A `disconnect` notice
//!   reconnects (codes 6 "token revoked" and 7 "admin logout" stop, as bad
//!   credentials do); `limit`, `warning` and the rest are forwarded and counted
//!   by the workers.
//! * A rule change reconnects with the new parameters, at most once per
//!   `min_rule_reconnect_secs`: changes in between are coalesced.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;

use crate::post::tolerant::{self, Id, Surprises, tolerant};

use super::backoff::Failure;
use super::http::{ByteStream, http_client, without_url};
use super::live::{Connection, Connector, Frame, Live, credential, live_source_config};
use super::{Source, SourceComponent, SourceContext, SourceError};
use crate::component::{BaseDir, Problems, yes};
use crate::key_pool::PooledKey;
use crate::post::Format;
use crate::rules::{Criterion, Rule, RuleSnapshot, RuleType};
use crate::secret::{Secret, SecretRef};

/// The `track`, `follow` and `locations` form values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterParams {
    pub track: String,
    pub follow: String,
    pub locations: String,
}

/// Build the filter parameters; returns what could not be sent, with why.
pub fn filter_params(rules: &[Rule]) -> (FilterParams, Vec<(String, String)>) {
    let mut track: Vec<String> = Vec::new();
    let mut follow: Vec<String> = Vec::new();
    let mut boxes: Vec<String> = Vec::new();
    let mut refused = Vec::new();
    for r in rules {
        match r.criterion() {
            Criterion::Track { terms, hashtag_only } => {
                let phrase = terms
                    .iter()
                    .map(|t| if *hashtag_only { format!("#{t}") } else { t.clone() })
                    .collect::<Vec<_>>()
                    .join(" ");
                if !track.contains(&phrase) {
                    track.push(phrase);
                }
            }
            Criterion::Follow { user_id } if user_id.bytes().all(|b| b.is_ascii_digit()) => {
                if !follow.contains(user_id) {
                    follow.push(user_id.clone());
                }
            }
            Criterion::Follow { user_id } => {
                refused.push((r.rule_id().to_owned(), format!("{user_id} is not a Twitter user id")));
            }
            Criterion::Locations { boxes: bs } => {
                for b in bs {
                    boxes.push(format!("{},{},{},{}", b.west, b.south, b.east, b.north));
                }
            }
            // The API takes boxes: the polygon's cover; the matcher keeps
            // the posts inside the polygon.
            Criterion::Polygon { shape } => {
                for b in &shape.cover().boxes {
                    boxes.push(format!("{},{},{},{}", b.west, b.south, b.east, b.north));
                }
            }
            Criterion::Verbatim => refused.push((r.rule_id().to_owned(), "x_v2 rules are for the v2 API".into())),
        }
    }
    track.sort();
    follow.sort_by_key(|id| id.parse::<u64>().unwrap_or(u64::MAX));
    let mut cap = |v: &mut Vec<String>, t: RuleType| {
        let limit = t.connection_limit();
        if v.len() > limit {
            for extra in v.drain(limit..) {
                refused.push((extra, format!("beyond the {t} limit of {limit} per connection")));
            }
        }
    };
    cap(&mut track, RuleType::Track);
    cap(&mut follow, RuleType::Follow);
    cap(&mut boxes, RuleType::Locations);
    (FilterParams { track: track.join(","), follow: follow.join(","), locations: boxes.join(",") }, refused)
}

/// OAuth 1.0a credentials.
#[derive(Debug, Clone)]
pub struct OAuthKeys {
    pub consumer_key: Secret,
    pub consumer_secret: Secret,
    pub access_token: Secret,
    pub access_token_secret: Secret,
}

live_source_config! {
    /// `[source]` with `type = "twitter_v1_filter"`.
    pub struct V1FilterConfig {
        /// API root.
        #[serde(default = "default_base")]
        pub base_url: String,
        /// OAuth 1.0a consumer key, `{ env = "…" }` or `{ file = "…" }`. The
        /// four credentials are not needed when `[coordination.api_keys]` hands
        /// out keys (fields of the same names).
        #[serde(default)]
        pub consumer_key: Option<SecretRef>,
        /// OAuth 1.0a consumer secret.
        #[serde(default)]
        pub consumer_secret: Option<SecretRef>,
        /// OAuth 1.0a access token.
        #[serde(default)]
        pub access_token: Option<SecretRef>,
        /// OAuth 1.0a access token secret.
        #[serde(default)]
        pub access_token_secret: Option<SecretRef>,
        /// `delimited=length` framing.
        #[serde(default = "yes")]
        pub delimited: bool,
        /// A rule change reconnects at most this often (changes in between coalesce).
        #[serde(default = "default_min_rule_reconnect_secs")]
        pub min_rule_reconnect_secs: u64,
    }
    stall_timeout_secs: "No data and no keep-alive for this long: reconnect (Twitter sends a keep-alive every 30 s and documents 90 s as the stall).", 90 s;
}

fn default_base() -> String {
    "https://stream.twitter.com".into()
}
fn default_min_rule_reconnect_secs() -> u64 {
    10
}

impl SourceComponent for V1FilterConfig {
    fn check(&self, p: &mut Problems<'_>) {
        p.url("base_url", &self.base_url, &["http", "https"]);
        p.range("min_rule_reconnect_secs", self.min_rule_reconnect_secs, 0, 3600);
        self.check_live(p);
    }

    fn resolve_paths(&mut self, base: &BaseDir) {
        for s in
            [&mut self.consumer_key, &mut self.consumer_secret, &mut self.access_token, &mut self.access_token_secret]
                .into_iter()
                .flatten()
        {
            base.fix_secret(s);
        }
    }

    fn format(&self) -> Format {
        Format::TwitterV1
    }

    fn live(&self) -> bool {
        true
    }

    fn build(&self, cx: &SourceContext) -> Result<Source, SourceError> {
        let keys = OAuthKeys {
            consumer_key: credential(cx, "consumer_key", self.consumer_key.as_ref())?,
            consumer_secret: credential(cx, "consumer_secret", self.consumer_secret.as_ref())?,
            access_token: credential(cx, "access_token", self.access_token.as_ref())?,
            access_token_secret: credential(cx, "access_token_secret", self.access_token_secret.as_ref())?,
        };
        let base_url = self.base_url.trim_end_matches('/').to_owned();
        let connector = V1Connector {
            client: http_client()?,
            url: format!("{base_url}/1.1/statuses/filter.json"),
            keys,
            delimited: self.delimited,
            max_record_bytes: cx.max_record_bytes,
            params: FilterParams::default(),
            last_read: Arc::default(),
            metrics: cx.metrics.clone(),
        };
        let mut settings = self.live_settings();
        settings.min_rule_reconnect = std::time::Duration::from_secs(self.min_rule_reconnect_secs);
        Ok(Source::new(Live::new(connector, settings, cx, format!("twitter_v1_filter {base_url}")), self.format()))
    }
}

/// The form body and its `Authorization` header.
pub fn signed_request(url: &str, p: &FilterParams, delimited: bool, keys: &OAuthKeys) -> (String, String) {
    let mut pairs: Vec<(&str, &str)> = vec![("stall_warnings", "true")];
    if delimited {
        pairs.push(("delimited", "length"));
    }
    for (k, v) in [("track", &p.track), ("follow", &p.follow), ("locations", &p.locations)] {
        if !v.is_empty() {
            pairs.push((k, v.as_str()));
        }
    }
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    let list: Vec<(&str, &dyn std::fmt::Display)> =
        pairs.iter().map(|(k, v)| (*k, v as &dyn std::fmt::Display)).collect();
    let body = oauth1_request::to_form(&oauth1_request::ParameterList::new(list)).to_string();
    (body, authorization(url, &pairs, keys, None))
}

/// The OAuth 1.0a `Authorization` header (HMAC-SHA1, RFC 5849 §3) of a POST
/// with these parameters, sorted by name. The nonce and timestamp are fresh
/// for every request; `fixed` pins them, for checking a signature against a
/// published example.
fn authorization(url: &str, pairs: &[(&str, &str)], keys: &OAuthKeys, fixed: Option<(&str, u64)>) -> String {
    let list: Vec<(&str, &dyn std::fmt::Display)> =
        pairs.iter().map(|(k, v)| (*k, v as &dyn std::fmt::Display)).collect();
    let request = oauth1_request::ParameterList::new(list);
    let client = oauth1_request::Credentials::new(keys.consumer_key.expose(), keys.consumer_secret.expose());
    let token = oauth1_request::Credentials::new(keys.access_token.expose(), keys.access_token_secret.expose());
    let mut builder = oauth1_request::Builder::new(client, oauth1_request::HMAC_SHA1);
    builder.token(token).version(true);
    if let Some((nonce, timestamp)) = fixed {
        builder.nonce(nonce).timestamp(std::num::NonZeroU64::new(timestamp));
    }
    builder.post(url, &request)
}

tolerant! {
    /// What the source reads of a message: the id to deduplicate by, and a
    /// `disconnect` notice.
    struct Peek<'a> in "status" {
        id_str: Id<'a>,
        id: u64,
        disconnect: Disconnect<'a>,
    }
}

tolerant! {
    struct Disconnect<'a> in "disconnect" {
        code: u32,
        reason: std::borrow::Cow<'a, str>,
    }
}

/// Framing state: plain lines, or `delimited=length`. Never holds more
/// than `max` bytes of one message: a longer one is skipped as it arrives.
pub(crate) struct Framer {
    delimited: bool,
    buf: Vec<u8>,
    /// Bytes of the message being read (after its length line).
    want: Option<usize>,
    max: usize,
    /// Bytes still to drop of a declared message over the cap.
    skip: usize,
    /// Inside a line over the cap: drop to its newline.
    skip_line: bool,
}

/// What the framer found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Framed {
    Message(Vec<u8>),
    /// A message over the cap went by.
    Oversized,
}

impl Framer {
    pub(crate) fn new(delimited: bool, max: usize) -> Framer {
        Framer { delimited, buf: Vec::new(), want: None, max, skip: 0, skip_line: false }
    }

    /// Bytes from the wire.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.buf.len()
    }

    /// The next complete message, if the buffer holds one. Keep-alive blank
    /// lines yield nothing.
    pub(crate) fn next(&mut self) -> Option<Framed> {
        loop {
            if self.skip > 0 {
                let n = self.skip.min(self.buf.len());
                self.buf.drain(..n);
                self.skip -= n;
                if self.skip > 0 {
                    return None;
                }
            }
            if let Some(n) = self.want {
                if self.buf.len() < n {
                    return None;
                }
                let msg: Vec<u8> = self.buf.drain(..n).collect();
                self.want = None;
                let trimmed = trim(&msg);
                if trimmed.is_empty() {
                    continue;
                }
                return Some(Framed::Message(trimmed.to_vec()));
            }
            let Some(nl) = memchr::memchr(b'\n', &self.buf) else {
                if self.buf.len() > self.max {
                    self.buf.clear();
                    if !std::mem::replace(&mut self.skip_line, true) {
                        return Some(Framed::Oversized);
                    }
                }
                return None;
            };
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            if std::mem::take(&mut self.skip_line) {
                continue; // the end of a line already reported
            }
            let t = trim(&line);
            if t.is_empty() {
                continue; // keep-alive
            }
            if self.delimited && t.iter().all(u8::is_ascii_digit) {
                match std::str::from_utf8(t).ok().and_then(|s| s.parse::<usize>().ok()) {
                    Some(n) if n > self.max => {
                        self.skip = n;
                        return Some(Framed::Oversized);
                    }
                    n => self.want = n,
                }
                continue;
            }
            return Some(Framed::Message(t.to_vec()));
        }
    }
}

fn trim(b: &[u8]) -> &[u8] {
    let s = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len());
    let e = b.iter().rposition(|c| !c.is_ascii_whitespace()).map_or(s, |e| e + 1);
    &b[s..e]
}

/// Connects to `statuses/filter` with the rules as parameters.
#[derive(Debug)]
pub struct V1Connector {
    client: reqwest::Client,
    url: String,
    keys: OAuthKeys,
    delimited: bool,
    max_record_bytes: usize,
    /// The parameters of the open connection.
    params: FilterParams,
    /// When (Unix ms) the last post was read: v1.1 cannot ask for what was
    /// sent while disconnected, so a reconnect logs the gap's length.
    last_read: Arc<AtomicU64>,
    metrics: Arc<crate::telemetry::Metrics>,
}

impl Connector for V1Connector {
    type Connection = V1Connection;

    fn name(&self) -> &'static str {
        "twitter_v1_filter"
    }

    const KEYED: bool = true;

    fn use_key(&mut self, key: &PooledKey) -> Result<(), String> {
        self.keys = OAuthKeys {
            consumer_key: key.field("consumer_key")?,
            consumer_secret: key.field("consumer_secret")?,
            access_token: key.field("access_token")?,
            access_token_secret: key.field("access_token_secret")?,
        };
        Ok(())
    }

    async fn connect(&mut self, rules: &RuleSnapshot) -> Result<V1Connection, Failure> {
        let last = self.last_read.load(Ordering::Acquire);
        if last > 0 {
            let gap_secs = super::position::now_ms().saturating_sub(last) / 1000;
            self.metrics.gap_seconds.store(gap_secs, Ordering::Relaxed);
            tracing::warn!(
                source = "twitter_v1_filter",
                gap_secs,
                "reconnecting: posts sent during the gap are not fetched (v1.1 has no backfill)"
            );
        }
        let (params, refused) = filter_params(&rules.rules);
        for (id, why) in &refused {
            tracing::warn!(rule = %id, reason = %why, "not sent to statuses/filter");
        }
        let (body, auth) = signed_request(&self.url, &params, self.delimited, &self.keys);
        let resp = self
            .client
            .post(&self.url)
            .header(reqwest::header::AUTHORIZATION, auth)
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| Failure::Network(without_url(&e)))?;
        let status = resp.status().as_u16();
        if status != 200 {
            let body = resp.text().await.unwrap_or_default();
            return Err(Failure::from_status(status, body.chars().take(200).collect()));
        }
        tracing::info!(
            source = "twitter_v1_filter",
            track = %params.track,
            follow_ids = params.follow.split(',').filter(|s| !s.is_empty()).count(),
            "filter parameters"
        );
        self.params = params;
        Ok(V1Connection {
            stream: Box::pin(resp.bytes_stream()),
            framer: Framer::new(self.delimited, self.max_record_bytes),
            arrived: None,
            last_read: self.last_read.clone(),
        })
    }

    /// The parameters are the request: changed rules need a new connection.
    fn needs_reconnect(&self, rules: &RuleSnapshot) -> bool {
        filter_params(&rules.rules).0 != self.params
    }
}

/// One `statuses/filter` connection.
pub struct V1Connection {
    stream: ByteStream,
    framer: Framer,
    /// When the last chunk came off the wire.
    arrived: Option<std::time::Instant>,
    /// The connector's time of the last post read.
    last_read: Arc<AtomicU64>,
}

impl std::fmt::Debug for V1Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V1Connection").field("buffered", &self.framer.buf.len()).finish()
    }
}

impl Connection for V1Connection {
    fn arrived(&self) -> Option<std::time::Instant> {
        self.arrived
    }

    async fn read(&mut self, frames: &mut Vec<Frame>) -> Result<(), Failure> {
        let chunk = match self.stream.next().await {
            None => return Err(Failure::Network("stream closed by the server".into())),
            Some(Err(e)) => return Err(Failure::Network(without_url(&e))),
            Some(Ok(c)) => c,
        };
        self.arrived = Some(std::time::Instant::now());
        self.framer.push(&chunk);
        let from = frames.len();
        while let Some(framed) = self.framer.next() {
            frames.push(match framed {
                Framed::Message(msg) => classify(msg),
                Framed::Oversized => Frame::Oversized,
            });
        }
        if frames[from..].iter().any(|f| matches!(f, Frame::Record { dedup: Some(_), .. })) {
            self.last_read.store(super::position::now_ms(), Ordering::Release);
        }
        Ok(())
    }
}

/// A message is a record (deduplicated by `id_str`), or a `disconnect`
/// notice, forwarded and then ending the connection: codes 6 (token revoked)
/// and 7 (admin logout) stop, as bad credentials do.
fn classify(msg: Vec<u8>) -> Frame {
    let peek = std::str::from_utf8(&msg)
        .ok()
        .and_then(|text| tolerant::read_record::<Peek<'_>>(text, "status", &Surprises::default()).ok().flatten());
    let dedup = peek.as_ref().and_then(|p| match (&p.id_str, p.id) {
        (Some(s), _) => Some(s.as_str().to_owned()),
        (None, Some(n)) => Some(n.to_string()),
        (None, None) => None,
    });
    let disconnect =
        peek.and_then(|p| p.disconnect).map(|d| (d.code.unwrap_or(0), d.reason.unwrap_or_default().into_owned()));
    match disconnect {
        Some((code, reason)) => Frame::End {
            record: Some(msg),
            failure: if matches!(code, 6 | 7) {
                Failure::Unauthorized(401, format!("disconnect {code}: {reason}"))
            } else {
                Failure::Network(format!("disconnect {code}: {reason}"))
            },
        },
        None => Frame::Record { bytes: msg, dedup, checkpoint: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, t: &str, v: &str, extra: &[(&str, &str)]) -> Rule {
        let mut f = vec![("rule_id".into(), id.into()), ("value".into(), v.into()), ("rule_type".into(), t.into())];
        f.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Rule::from_fields(f, RuleType::Track).expect("valid")
    }

    /// A polygon is sent as its cover (at most `max_boxes` boxes), after
    /// the plain boxes, within the 25-box limit.
    #[test]
    fn a_polygon_is_sent_as_its_cover() {
        let l = "POLYGON((0 0, 3 0, 3 1, 1 1, 1 3, 0 3, 0 0))";
        let rules = vec![
            rule("1", "locations", "-122.75,36.8,-121.75,37.8", &[]),
            rule("2", "locations", l, &[("max_boxes", "3")]),
        ];
        let (p, refused) = filter_params(&rules);
        assert!(refused.is_empty(), "{refused:?}");
        let n: Vec<f64> = p.locations.split(',').map(|x| x.parse().expect("number")).collect();
        assert_eq!(n.len() % 4, 0);
        assert!(n.len() / 4 >= 2 && n.len() / 4 <= 4, "{}", p.locations);
        assert_eq!(&n[..4], &[-122.75, 36.8, -121.75, 37.8]);
        let covered = |x: f64, y: f64| n[4..].chunks(4).any(|b| b[0] <= x && x <= b[2] && b[1] <= y && y <= b[3]);
        assert!(covered(0.0, 0.0) && covered(3.0, 1.0) && covered(1.0, 3.0) && covered(0.5, 2.5));
        assert!(rules[1].units() <= 3);
    }

    #[test]
    fn params_as_the_original_built_them() {
        // The original's test: '#apple,#sliding #door,#summer,happy'.
        let rules = vec![
            rule("1", "track", "happy", &[]),
            rule("2", "track", "summer", &[("orig_type", "hashtag")]),
            rule("3", "track", "#apple", &[("orig_type", "hashtag")]),
            rule("4", "track", "#sliding door", &[("orig_type", "hashtag")]),
            rule("5", "track", "summer", &[("orig_type", "hashtag")]),
            rule("6", "follow", "17919972", &[]),
            rule("7", "follow", "42", &[]),
            rule("8", "locations", "-122.75,36.8,-121.75,37.8", &[]),
        ];
        let (p, refused) = filter_params(&rules);
        assert_eq!(p.track, "#apple,#sliding #door,#summer,happy");
        assert_eq!(p.follow, "42,17919972");
        assert_eq!(p.locations, "-122.75,36.8,-121.75,37.8");
        assert!(refused.is_empty());
    }

    #[test]
    fn limits_are_enforced_and_reported() {
        let rules: Vec<Rule> = (0..402).map(|i| rule(&i.to_string(), "track", &format!("w{i:03}"), &[])).collect();
        let (p, refused) = filter_params(&rules);
        assert_eq!(p.track.split(',').count(), 400);
        assert_eq!(refused.len(), 2);
    }

    #[test]
    fn length_framing_and_keep_alives() {
        let m1 = br#"{"id_str":"1","text":"a"}"#;
        let m2 = br#"{"limit":{"track":5}}"#;
        let mut wire = Vec::new();
        wire.extend_from_slice(b"\r\n");
        wire.extend_from_slice(format!("{}\r\n", m1.len() + 2).as_bytes());
        wire.extend_from_slice(m1);
        wire.extend_from_slice(b"\r\n\r\n");
        wire.extend_from_slice(format!("{}\r\n", m2.len() + 2).as_bytes());
        wire.extend_from_slice(m2);
        wire.extend_from_slice(b"\r\n");
        let mut f = Framer::new(true, 1 << 20);
        let mut got = Vec::new();
        // Fed in awkward pieces.
        for piece in wire.chunks(7) {
            f.buf.extend_from_slice(piece);
            while let Some(m) = f.next() {
                got.push(m);
            }
        }
        assert_eq!(got, vec![Framed::Message(m1.to_vec()), Framed::Message(m2.to_vec())]);
    }

    /// Issue 16, defect 8: a declared length (or a line) without bound was
    /// buffered whole; over `max_record_bytes` it is skipped as it arrives.
    #[test]
    fn messages_over_the_cap_are_skipped_not_held() {
        let big = vec![b'x'; 500];
        let mut wire = Vec::new();
        wire.extend_from_slice(format!("{}\r\n", big.len()).as_bytes());
        wire.extend_from_slice(&big);
        wire.extend_from_slice(b"14\r\n{\"id_str\":\"1\"}\n");
        let mut f = Framer::new(true, 100);
        let mut got = Vec::new();
        for piece in wire.chunks(9) {
            f.buf.extend_from_slice(piece);
            while let Some(m) = f.next() {
                got.push(m);
            }
            assert!(f.buf.len() <= 109, "held {}", f.buf.len());
        }
        assert_eq!(got, vec![Framed::Oversized, Framed::Message(br#"{"id_str":"1"}"#.to_vec())]);
        // Plain lines too.
        let mut f = Framer::new(false, 100);
        let mut got = Vec::new();
        for piece in [&big[..300], &big[300..], b"\n{\"a\":1}\n"] {
            f.buf.extend_from_slice(piece);
            while let Some(m) = f.next() {
                got.push(m);
            }
        }
        assert_eq!(got, vec![Framed::Oversized, Framed::Message(br#"{"a":1}"#.to_vec())]);
    }

    #[test]
    fn requests_are_signed() {
        let keys = OAuthKeys {
            consumer_key: Secret::new("ck"),
            consumer_secret: Secret::new("cs"),
            access_token: Secret::new("at"),
            access_token_secret: Secret::new("as"),
        };
        let p = FilterParams { track: "happy,#summer".into(), follow: String::new(), locations: String::new() };
        let (body, auth) = signed_request("http://127.0.0.1:1/1.1/statuses/filter.json", &p, true, &keys);
        assert_eq!(body, "delimited=length&stall_warnings=true&track=happy%2C%23summer");
        assert!(
            auth.starts_with("OAuth ")
                && auth.contains("oauth_consumer_key=\"ck\"")
                && auth.contains("oauth_token=\"at\"")
                && auth.contains("oauth_signature_method=\"HMAC-SHA1\"")
                && auth.contains("oauth_signature="),
            "{auth}"
        );
        // Two requests never share a nonce (RFC 5849 §3.3).
        let (_, again) = signed_request("http://127.0.0.1:1/1.1/statuses/filter.json", &p, true, &keys);
        let nonce = |a: &str| a.split("oauth_nonce=\"").nth(1).and_then(|n| n.split('"').next()).map(str::to_owned);
        assert!(nonce(&auth).is_some() && nonce(&auth) != nonce(&again), "{auth} / {again}");
    }

    /// Twitter's documented example, "Creating a signature" (developer.twitter.com,
    /// OAuth 1.0a): the same keys, nonce, timestamp and parameters must give
    /// the published signature `hCtSmYh+iHYCEqBWrE7C7hYmtUk=`.
    #[test]
    fn the_signature_matches_twitters_published_example() {
        let keys = OAuthKeys {
            consumer_key: Secret::new("xvz1evFS4wEEPTGEFPHBog"),
            consumer_secret: Secret::new("kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw"),
            access_token: Secret::new("370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb"),
            access_token_secret: Secret::new("LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE"),
        };
        let auth = authorization(
            "https://api.twitter.com/1.1/statuses/update.json",
            &[("include_entities", "true"), ("status", "Hello Ladies + Gentlemen, a signed OAuth request!")],
            &keys,
            Some(("kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg", 1318622958)),
        );
        assert!(auth.contains("oauth_signature=\"hCtSmYh%2BiHYCEqBWrE7C7hYmtUk%3D\""), "{auth}");
        assert!(auth.contains("oauth_timestamp=\"1318622958\"") && auth.contains("oauth_version=\"1.0\""), "{auth}");
        // Neither secret appears in the header.
        assert!(
            !auth.contains("kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw")
                && !auth.contains("LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE")
        );
    }
}
