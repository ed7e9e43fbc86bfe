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
use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::backoff::{Connected, ConnectionStats, Ended, Failure, reconnect_loop};
use super::x_stream::Dedup;
use super::{BatchTx, Batching, SourceError, SourceSummary};
use crate::config::Secret;
use crate::coordination::Health;
use crate::pipeline::Batcher;
use crate::rules::{Criterion, Rule, RuleSnapshot, RuleType};

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

/// Settings of the source.
#[derive(Debug, Clone)]
pub struct V1Options {
    pub base_url: String,
    pub keys: OAuthKeys,
    pub stall_timeout: Duration,
    pub delimited: bool,
    pub min_rule_reconnect: Duration,
}

/// The running source.
#[derive(Debug)]
pub struct V1Filter {
    pub opts: V1Options,
    pub batching: Batching,
    pub rules: watch::Receiver<Arc<RuleSnapshot>>,
    pub health: Arc<Health>,
    pub stats: Arc<ConnectionStats>,
    pub backoff_scale: f64,
}

/// The form body and its `Authorization` header.
pub fn signed_request(url: &str, p: &FilterParams, delimited: bool, keys: &OAuthKeys) -> (String, String) {
    let delim = if delimited { "length" } else { "" };
    let mut pairs: Vec<(&str, &str)> = vec![("stall_warnings", "true")];
    if delimited {
        pairs.push(("delimited", delim));
    }
    for (k, v) in [("track", &p.track), ("follow", &p.follow), ("locations", &p.locations)] {
        if !v.is_empty() {
            pairs.push((k, v.as_str()));
        }
    }
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    let list: Vec<(&str, &dyn std::fmt::Display)> =
        pairs.iter().map(|(k, v)| (*k, v as &dyn std::fmt::Display)).collect();
    let request = oauth1_request::ParameterList::new(list);
    let token = oauth1_request::Token::from_parts(
        keys.consumer_key.expose(),
        keys.consumer_secret.expose(),
        keys.access_token.expose(),
        keys.access_token_secret.expose(),
    );
    let auth = oauth1_request::post(url, &request, &token, oauth1_request::HMAC_SHA1);
    (oauth1_request::to_form(&request).to_string(), auth)
}

#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow, default)]
    id_str: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    disconnect: Option<Disconnect>,
}

#[derive(Deserialize)]
struct Disconnect {
    #[serde(default)]
    code: u32,
    #[serde(default)]
    reason: String,
}

/// Framing state: plain lines, or `delimited=length`.
struct Framer {
    delimited: bool,
    buf: Vec<u8>,
    /// Bytes of the message being read (after its length line).
    want: Option<usize>,
}

impl Framer {
    /// The next complete message, if the buffer holds one. Keep-alive blank
    /// lines yield nothing.
    fn next(&mut self) -> Option<Vec<u8>> {
        loop {
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
                return Some(trimmed.to_vec());
            }
            let nl = memchr::memchr(b'\n', &self.buf)?;
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            let t = trim(&line);
            if t.is_empty() {
                continue; // keep-alive
            }
            if self.delimited && t.iter().all(u8::is_ascii_digit) {
                self.want = std::str::from_utf8(t).ok().and_then(|s| s.parse().ok());
                continue;
            }
            return Some(t.to_vec());
        }
    }
}

fn trim(b: &[u8]) -> &[u8] {
    let s = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len());
    let e = b.iter().rposition(|c| !c.is_ascii_whitespace()).map_or(s, |e| e + 1);
    &b[s..e]
}

impl V1Filter {
    pub async fn run(mut self, out: BatchTx, shutdown: CancellationToken) -> Result<SourceSummary, SourceError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("traptor/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SourceError::Task(format!("HTTP client: {e}")))?;
        let mut summary = SourceSummary::default();
        let mut dedup = Dedup::new(100_000);
        let mut batcher = Batcher::new(self.batching.max_records);
        let rules = std::sync::Mutex::new(self.rules.clone());
        let _ = self.rules.borrow_and_update();
        let state = std::sync::Mutex::new((&mut summary, &mut dedup, &mut batcher));
        let this = &self;
        let stopped =
            reconnect_loop("twitter_v1_filter", self.stats.clone(), shutdown.clone(), self.backoff_scale, |up| {
                let (out, shutdown, client) = (out.clone(), shutdown.clone(), client.clone());
                let (state, rules) = (&state, &rules);
                async move { this.stream_once(&client, up, &out, &shutdown, state, rules).await }
            })
            .await;
        let _ = state.into_inner();
        if let Some(b) = batcher.flush() {
            let _ = out.send(b).await;
        }
        match stopped {
            Some(f) => {
                self.health.set_unhealthy(format!("Twitter refused the credentials: {f}"));
                Err(SourceError::Unauthorized(f.to_string()))
            }
            None => Ok(summary),
        }
    }

    #[allow(clippy::type_complexity)]
    async fn stream_once(
        &self,
        client: &reqwest::Client,
        up: Connected,
        out: &BatchTx,
        shutdown: &CancellationToken,
        state: &std::sync::Mutex<(&mut SourceSummary, &mut Dedup, &mut Batcher)>,
        rules: &std::sync::Mutex<watch::Receiver<Arc<RuleSnapshot>>>,
    ) -> Result<Ended, Failure> {
        let mut rules_rx = rules.lock().map_err(|_| Failure::Network("poisoned".into()))?.clone();
        let snapshot = rules_rx.borrow_and_update().clone();
        let (params, refused) = filter_params(&snapshot.rules);
        for (id, why) in &refused {
            tracing::warn!(rule = %id, reason = %why, "not sent to statuses/filter");
        }
        let url = format!("{}/1.1/statuses/filter.json", self.opts.base_url.trim_end_matches('/'));
        let (body, auth) = signed_request(&url, &params, self.opts.delimited, &self.opts.keys);
        let send = client
            .post(&url)
            .header(reqwest::header::AUTHORIZATION, auth)
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send();
        let resp = tokio::select! {
            () = shutdown.cancelled() => return Ok(Ended::Shutdown),
            r = send => r,
        }
        .map_err(|e| Failure::Network(e.to_string()))?;
        let status = resp.status().as_u16();
        if status != 200 {
            let body = resp.text().await.unwrap_or_default();
            return Err(Failure::from_status(status, body.chars().take(200).collect()));
        }
        up.mark();
        self.health.set_healthy();
        let connected_at = tokio::time::Instant::now();
        tracing::info!(source = "twitter_v1_filter", track = %params.track, follow_ids = params.follow.split(',').filter(|s| !s.is_empty()).count(), "stream connected");
        let mut stream = resp.bytes_stream();
        let mut framer = Framer { delimited: self.opts.delimited, buf: Vec::new(), want: None };
        let mut flush_at = tokio::time::Instant::now() + self.batching.max_wait;
        let mut stall_at = tokio::time::Instant::now() + self.opts.stall_timeout;
        let mut reconnect_at: Option<tokio::time::Instant> = None;
        loop {
            let wake = reconnect_at.map_or(flush_at, |r| r.min(flush_at));
            let next = tokio::select! {
                () = shutdown.cancelled() => return Ok(Ended::Shutdown),
                () = tokio::time::sleep_until(wake) => {
                    if reconnect_at.is_some_and(|r| tokio::time::Instant::now() >= r) {
                        return Ok(Ended::Reconnect);
                    }
                    let full = state.lock().ok().and_then(|mut s| s.2.flush());
                    if let Some(b) = full && out.send(b).await.is_err() {
                        return Ok(Ended::Shutdown);
                    }
                    flush_at = tokio::time::Instant::now() + self.batching.max_wait;
                    continue;
                }
                changed = rules_rx.changed() => {
                    if changed.is_ok() {
                        let (new, _) = filter_params(&rules_rx.borrow_and_update().rules);
                        if new != params {
                            // Coalesce: one reconnect, no earlier than allowed.
                            let earliest = connected_at + self.opts.min_rule_reconnect;
                            reconnect_at = Some(earliest.max(tokio::time::Instant::now() + Duration::from_millis(100)));
                            tracing::info!(source = "twitter_v1_filter", "rules changed; reconnecting with the new parameters");
                        } else {
                            reconnect_at = None;
                        }
                    }
                    continue;
                }
                n = tokio::time::timeout_at(stall_at, stream.next()) => n,
            };
            let chunk = match next {
                Err(_) => {
                    return Err(Failure::Network(format!(
                        "stalled: nothing for {} s",
                        self.opts.stall_timeout.as_secs()
                    )));
                }
                Ok(None) => return Err(Failure::Network("stream closed by the server".into())),
                Ok(Some(Err(e))) => return Err(Failure::Network(e.to_string())),
                Ok(Some(Ok(c))) => c,
            };
            stall_at = tokio::time::Instant::now() + self.opts.stall_timeout;
            framer.buf.extend_from_slice(&chunk);
            while let Some(msg) = framer.next() {
                let peek = serde_json::from_slice::<Peek<'_>>(&msg).ok();
                let disconnect = peek.as_ref().and_then(|p| p.disconnect.as_ref()).map(|d| (d.code, d.reason.clone()));
                let full = {
                    let mut guard = state.lock().map_err(|_| Failure::Network("poisoned".into()))?;
                    let (summary, dedup, batcher) = &mut *guard;
                    if let Some(id) = peek.as_ref().and_then(|p| p.id_str.as_deref())
                        && !dedup.first(id)
                    {
                        continue;
                    }
                    summary.records += 1;
                    summary.bytes += msg.len() as u64;
                    let n = summary.records;
                    batcher.push(&msg, n)
                };
                if let Some(b) = full
                    && out.send(b).await.is_err()
                {
                    return Ok(Ended::Shutdown);
                }
                if let Some((code, reason)) = disconnect {
                    // Disconnect codes: 6 token revoked, 7 admin logout → stop.
                    return Err(if matches!(code, 6 | 7) {
                        Failure::Unauthorized(401, format!("disconnect {code}: {reason}"))
                    } else {
                        Failure::Network(format!("disconnect {code}: {reason}"))
                    });
                }
            }
        }
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
        let mut f = Framer { delimited: true, buf: Vec::new(), want: None };
        let mut got = Vec::new();
        // Fed in awkward pieces.
        for piece in wire.chunks(7) {
            f.buf.extend_from_slice(piece);
            while let Some(m) = f.next() {
                got.push(m);
            }
        }
        assert_eq!(got, vec![m1.to_vec(), m2.to_vec()]);
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
                && auth.contains("oauth_signature=")
        );
        assert!(!auth.contains("cs") || !auth.contains("oauth_consumer_secret"));
    }
}
