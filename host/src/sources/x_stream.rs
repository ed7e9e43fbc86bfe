//! The `x_filtered_stream` source: X API v2 filtered stream with rule sync.
//!
//! * **Rule sync.** The local rule set (file or Redis) is the truth. On start
//!   and on every change: translate each rule to v2 syntax ([`to_v2`]), list the
//!   app's rules (`GET /2/tweets/search/stream/rules`), validate additions with
//!   `dry_run=true`, delete what is not wanted, add what is missing (tag = our
//!   `rule_id`). Rules the API rejects are reported with its reason; the tier's
//!   rule count and length are enforced before sending; a rules endpoint that
//!   says "no requests left" (`x-rate-limit-remaining: 0`) is waited for until
//!   `x-rate-limit-reset`.
//! * **Stream.** `GET /2/tweets/search/stream` with the expansions the post view
//!   needs (author, referenced posts and their authors, place). Lines end with
//!   `\r\n`; a bare `\r\n` every ~20 s is a keep-alive; nothing for
//!   `stall_timeout_secs` (20) means a stalled connection and a reconnect.
//!   In-stream `errors` are forwarded; an operational disconnect (matched on
//!   `title`/`type`, never `disconnect_type`) reconnects. A line cut by a
//!   dropped connection is discarded, and posts redelivered after a reconnect
//!   are dropped by id within a window, so nothing is lost or doubled.
//! * **Reconnects** follow [`super::backoff`]; 401/403 stop the source and mark
//!   the collector unhealthy (heartbeat withheld).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::backoff::{Connected, ConnectionStats, Ended, Failure, reconnect_loop};
use super::{BatchTx, Batching, SourceError, SourceSummary};
use crate::config::Secret;
use crate::coordination::Health;
use crate::pipeline::Batcher;
use crate::rules::{Criterion, Rule, RuleSnapshot};

/// Expansions and fields requested on the stream: what the post view needs.
pub const STREAM_PARAMS: &str = "expansions=author_id,referenced_tweets.id,referenced_tweets.id.author_id,in_reply_to_user_id,geo.place_id,entities.mentions.username\
&tweet.fields=author_id,created_at,entities,geo,in_reply_to_user_id,lang,note_tweet,referenced_tweets,conversation_id,public_metrics,source\
&user.fields=username,name,verified,created_at\
&place.fields=full_name,geo,country_code,place_type";

/// Longest side of a `bounding_box:` rule the v2 API accepts (miles).
const MAX_BOX_SIDE_MILES: f64 = 25.0;

/// Settings of the source (from `[source]`).
#[derive(Debug, Clone)]
pub struct XStreamOptions {
    pub base_url: String,
    pub token: Secret,
    pub stall_timeout: Duration,
    pub sync_rules: bool,
    pub max_rules: usize,
    pub max_rule_length: usize,
    pub dedup_window: usize,
}

/// A v2 rule as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RemoteRule {
    pub id: String,
    pub value: String,
    #[serde(default)]
    pub tag: Option<String>,
}

/// A term safe to send: quoted when it could read as an operator.
fn term(t: &str) -> String {
    let special = t.starts_with('-') || t.contains(['(', ')', ':', '"']) || t.eq_ignore_ascii_case("or");
    if special { format!("\"{}\"", t.replace('"', "")) } else { t.to_owned() }
}

/// Miles per degree of latitude.
const MILES_PER_DEGREE: f64 = 69.0;

/// Translate a rule to v2 syntax, or say why it cannot be sent.
pub fn to_v2(rule: &Rule) -> Result<String, String> {
    match rule.criterion() {
        Criterion::Track { terms, hashtag_only } => Ok(terms
            .iter()
            .map(|t| if *hashtag_only { format!("#{t}") } else { term(t) })
            .collect::<Vec<_>>()
            .join(" ")),
        Criterion::Follow { user_id } if user_id.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(format!("from:{user_id} OR retweets_of:{user_id} OR to:{user_id}"))
        }
        Criterion::Follow { user_id } => Err(format!("{user_id} is not an X user id")),
        Criterion::Locations { boxes } => {
            let mut parts = Vec::new();
            for b in boxes {
                let mid = ((b.south + b.north) / 2.0).to_radians();
                let width = (b.east - b.west) * MILES_PER_DEGREE * mid.cos();
                let height = (b.north - b.south) * MILES_PER_DEGREE;
                if width > MAX_BOX_SIDE_MILES || height > MAX_BOX_SIDE_MILES {
                    return Err(format!(
                        "box {},{},{},{} is {width:.0} × {height:.0} miles; the v2 API allows at most {MAX_BOX_SIDE_MILES} miles per side",
                        b.west, b.south, b.east, b.north
                    ));
                }
                parts.push(format!("bounding_box:[{} {} {} {}]", b.west, b.south, b.east, b.north));
            }
            Ok(if parts.len() == 1 { parts.remove(0) } else { format!("({})", parts.join(" OR ")) })
        }
        Criterion::Verbatim => Ok(rule.value().to_owned()),
    }
}

/// What a sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub kept: usize,
    pub added: Vec<String>,
    pub deleted: Vec<String>,
    /// `(rule_id, reason)`: not translatable, over a tier limit, or refused by the API.
    pub rejected: Vec<(String, String)>,
}

/// The API's rules endpoints.
#[derive(Debug, Clone)]
pub struct RulesApi {
    client: reqwest::Client,
    base: String,
    token: Secret,
}

#[derive(Deserialize, Default)]
struct RulesPage {
    #[serde(default)]
    data: Vec<RemoteRule>,
    #[serde(default)]
    errors: Vec<ApiError>,
}

#[derive(Deserialize, Default, Debug, Clone)]
struct ApiError {
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    detail: Option<String>,
    #[serde(default)]
    details: Vec<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

impl ApiError {
    fn reason(&self) -> String {
        let mut r = self.title.clone().unwrap_or_else(|| "rejected".into());
        if !self.details.is_empty() {
            r.push_str(": ");
            r.push_str(&self.details.join("; "));
        } else if let Some(d) = &self.detail {
            r.push_str(": ");
            r.push_str(d);
        }
        r
    }
}

impl RulesApi {
    pub fn new(client: reqwest::Client, base: &str, token: Secret) -> RulesApi {
        RulesApi { client, base: base.trim_end_matches('/').to_owned(), token }
    }

    fn url(&self, dry_run: bool) -> String {
        format!("{}/2/tweets/search/stream/rules{}", self.base, if dry_run { "?dry_run=true" } else { "" })
    }

    /// One request, honouring the endpoint's rate limit (a 429 is waited out
    /// up to three times).
    async fn send(&self, req: impl Fn() -> reqwest::RequestBuilder) -> Result<RulesPage, Failure> {
        for _ in 0..3 {
            let resp = req()
                .bearer_auth(self.token.expose())
                .send()
                .await
                .map_err(|e| Failure::Network(format!("rules endpoint: {}", without_url(&e))))?;
            let status = resp.status().as_u16();
            let wait = rate_limit_wait(resp.headers());
            let body = resp.text().await.map_err(|e| Failure::Network(without_url(&e)))?;
            if status == 429 {
                let w = wait.unwrap_or(Duration::from_secs(60));
                tracing::warn!(wait_secs = w.as_secs(), "rules endpoint rate limit reached; waiting");
                tokio::time::sleep(w).await;
                continue;
            }
            if !(200..300).contains(&status) {
                return Err(Failure::from_status(status, problem_detail(&body)));
            }
            if let Some(w) = wait {
                tracing::info!(wait_secs = w.as_secs(), "rules endpoint: no requests left in this window; waiting");
                tokio::time::sleep(w).await;
            }
            return serde_json::from_str(&body)
                .map_err(|e| Failure::Http(status, format!("unreadable rules response: {e}")));
        }
        Err(Failure::RateLimited(429, "rules endpoint kept answering 429".into()))
    }

    pub async fn list(&self) -> Result<Vec<RemoteRule>, Failure> {
        Ok(self.send(|| self.client.get(self.url(false))).await?.data)
    }

    async fn add(&self, rules: &[(String, String)], dry_run: bool) -> Result<RulesPage, Failure> {
        let body = serde_json::json!({
            "add": rules.iter().map(|(tag, value)| serde_json::json!({"value": value, "tag": tag})).collect::<Vec<_>>()
        });
        self.send(|| json_post(&self.client, self.url(dry_run), &body)).await
    }

    async fn delete(&self, ids: &[String]) -> Result<RulesPage, Failure> {
        let body = serde_json::json!({"delete": {"ids": ids}});
        self.send(|| json_post(&self.client, self.url(false), &body)).await
    }

    /// Make the app's rules equal to `rules` (see the module docs).
    pub async fn sync(&self, rules: &[Rule], max_rules: usize, max_len: usize) -> Result<SyncReport, Failure> {
        let mut report = SyncReport::default();
        let mut desired: Vec<(String, String)> = Vec::new();
        for r in rules {
            match to_v2(r) {
                Ok(v) if v.chars().count() > max_len => report.rejected.push((
                    r.rule_id().to_owned(),
                    format!("{} characters; the tier allows {max_len}", v.chars().count()),
                )),
                Ok(_) if desired.len() >= max_rules => {
                    report.rejected.push((r.rule_id().to_owned(), format!("beyond the tier's {max_rules} rules")))
                }
                Ok(v) => desired.push((r.rule_id().to_owned(), v)),
                Err(reason) => report.rejected.push((r.rule_id().to_owned(), reason)),
            }
        }
        let remote = self.list().await?;
        let wanted: HashSet<(&str, &str)> = desired.iter().map(|(t, v)| (t.as_str(), v.as_str())).collect();
        let have: HashSet<(&str, &str)> =
            remote.iter().filter_map(|r| Some((r.tag.as_deref()?, r.value.as_str()))).collect();
        let to_delete: Vec<String> = remote
            .iter()
            .filter(|r| !r.tag.as_deref().is_some_and(|t| wanted.contains(&(t, r.value.as_str()))))
            .map(|r| r.id.clone())
            .collect();
        let mut to_add: Vec<(String, String)> =
            desired.iter().filter(|(t, v)| !have.contains(&(t.as_str(), v.as_str()))).cloned().collect();
        report.kept = desired.len() - to_add.len();
        for chunk in to_add.clone().chunks(100) {
            let checked = self.add(chunk, true).await?;
            for e in checked.errors {
                if let Some(v) = &e.value
                    && let Some(pos) = to_add.iter().position(|(_, val)| val == v)
                {
                    let (tag, _) = to_add.remove(pos);
                    report.rejected.push((tag, e.reason()));
                }
            }
        }
        for chunk in to_delete.chunks(100) {
            self.delete(chunk).await?;
        }
        report.deleted = to_delete;
        for chunk in to_add.chunks(100) {
            let page = self.add(chunk, false).await?;
            for e in page.errors {
                if let Some(v) = &e.value
                    && let Some((tag, _)) = chunk.iter().find(|(_, val)| val == v)
                {
                    report.rejected.push((tag.clone(), e.reason()));
                    continue;
                }
                tracing::warn!(error = %e.reason(), id = ?e.id, "rules endpoint reported an error");
            }
            report.added.extend(chunk.iter().map(|(t, _)| t.clone()));
        }
        let rejected: HashSet<&str> = report.rejected.iter().map(|(t, _)| t.as_str()).collect();
        report.added.retain(|t| !rejected.contains(t.as_str()));
        Ok(report)
    }
}

fn json_post(client: &reqwest::Client, url: String, body: &serde_json::Value) -> reqwest::RequestBuilder {
    client.post(url).header(reqwest::header::CONTENT_TYPE, "application/json").body(body.to_string())
}

/// `x-rate-limit-remaining: 0` → wait until `x-rate-limit-reset` (epoch seconds).
fn rate_limit_wait(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let remaining: u64 = h.get("x-rate-limit-remaining")?.to_str().ok()?.parse().ok()?;
    if remaining > 0 {
        return None;
    }
    let reset: u64 = h.get("x-rate-limit-reset")?.to_str().ok()?.parse().ok()?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(reset.saturating_sub(now).clamp(1, 900)))
}

/// `title: detail` of an RFC 7807 problem body, or the body itself (short).
fn problem_detail(body: &str) -> String {
    #[derive(Deserialize)]
    struct P {
        title: Option<String>,
        detail: Option<String>,
    }
    match serde_json::from_str::<P>(body) {
        Ok(P { title: Some(t), detail }) => format!("{t}{}", detail.map(|d| format!(": {d}")).unwrap_or_default()),
        _ => body.chars().take(200).collect(),
    }
}

/// reqwest errors print the URL; ours never carry secrets in URLs, but keep
/// messages short.
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "");
    }
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Ids seen recently (redeliveries after a reconnect are dropped).
#[derive(Debug)]
pub struct Dedup {
    set: HashSet<String>,
    order: VecDeque<String>,
    cap: usize,
}

impl Dedup {
    pub fn new(cap: usize) -> Dedup {
        Dedup { set: HashSet::new(), order: VecDeque::new(), cap: cap.max(1) }
    }
    /// True the first time an id is seen within the window.
    pub fn first(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() >= self.cap
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.set.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        true
    }
}

#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow, default)]
    data: Option<PeekData<'a>>,
    #[serde(default)]
    errors: Option<Vec<ApiError>>,
}

#[derive(Deserialize)]
struct PeekData<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
}

/// What one stream line is.
enum Line {
    KeepAlive,
    Post(String),
    Errors { disconnect: Option<String> },
    Other,
}

fn classify(line: &[u8]) -> Line {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Line::KeepAlive;
    }
    match serde_json::from_slice::<Peek<'_>>(line) {
        Ok(Peek { data: Some(d), .. }) => Line::Post(d.id.into_owned()),
        Ok(Peek { errors: Some(errs), .. }) => {
            // Operational disconnects: match on title / type (disconnect_type
            // values are not a stable contract).
            let d = errs.iter().find(|e| {
                e.title.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("operational-disconnect"))
                    || e.kind.as_deref().is_some_and(|t| t.ends_with("/operational-disconnect"))
                    || e.title.as_deref().is_some_and(|t| t.contains("ConnectionException"))
            });
            Line::Errors { disconnect: d.map(ApiError::reason) }
        }
        _ => Line::Other,
    }
}

/// The running source.
#[derive(Debug)]
pub struct XStream {
    pub opts: XStreamOptions,
    pub batching: Batching,
    pub rules: watch::Receiver<Arc<RuleSnapshot>>,
    pub health: Arc<Health>,
    pub stats: Arc<ConnectionStats>,
    /// Scales every backoff wait (tests only; 1.0 in production).
    pub backoff_scale: f64,
}

impl XStream {
    fn client(&self) -> Result<reqwest::Client, SourceError> {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("traptor/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SourceError::Task(format!("HTTP client: {e}")))
    }

    pub async fn run(mut self, out: BatchTx, shutdown: CancellationToken) -> Result<SourceSummary, SourceError> {
        let client = self.client()?;
        let api = RulesApi::new(client.clone(), &self.opts.base_url, self.opts.token.clone());
        if self.opts.sync_rules {
            // First sync before streaming, so attribution is right from the start.
            let rules = self.rules.borrow_and_update().rules.clone();
            if let Err(f) = self.sync(&api, &rules).await
                && let Failure::Unauthorized(..) = f
            {
                self.health.set_unhealthy(format!("X API refused the credentials: {f}"));
                return Err(SourceError::Unauthorized(f.to_string()));
            }
            let mut rx = self.rules.clone();
            let api2 = api.clone();
            let opts = self.opts.clone();
            let stop = shutdown.clone();
            let health = self.health.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        r = rx.changed() => if r.is_err() { return },
                    }
                    // Coalesce bursts of changes.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let rules = rx.borrow_and_update().rules.clone();
                    match api2.sync(&rules, opts.max_rules, opts.max_rule_length).await {
                        Ok(r) => log_sync(&r),
                        Err(f @ Failure::Unauthorized(..)) => {
                            health.set_unhealthy(format!("X API refused the credentials: {f}"));
                            tracing::error!(error = %f, "rule sync refused");
                        }
                        Err(f) => tracing::warn!(error = %f, "rule sync failed; will retry on the next change"),
                    }
                }
            });
        }
        let summary = Arc::new(std::sync::Mutex::new(SourceSummary::default()));
        let dedup = Arc::new(std::sync::Mutex::new(Dedup::new(self.opts.dedup_window)));
        let batcher = Arc::new(tokio::sync::Mutex::new(Batcher::new(self.batching.max_records)));
        let stats = self.stats.clone();
        let scale = self.backoff_scale;
        let this = &self;
        let stopped = reconnect_loop("x_filtered_stream", stats, shutdown.clone(), scale, |up| {
            let (out, shutdown, summary, dedup, batcher, client) =
                (out.clone(), shutdown.clone(), summary.clone(), dedup.clone(), batcher.clone(), client.clone());
            async move { this.stream_once(&client, up, &out, &shutdown, &summary, &dedup, &batcher).await }
        })
        .await;
        if let Some(b) = batcher.lock().await.flush() {
            let _ = out.send(b).await;
        }
        let s = summary.lock().map(|s| s.clone()).unwrap_or_default();
        match stopped {
            Some(f) => {
                self.health.set_unhealthy(format!("X API refused the credentials: {f}"));
                Err(SourceError::Unauthorized(f.to_string()))
            }
            None => Ok(s),
        }
    }

    async fn sync(&self, api: &RulesApi, rules: &[Rule]) -> Result<(), Failure> {
        match api.sync(rules, self.opts.max_rules, self.opts.max_rule_length).await {
            Ok(r) => {
                log_sync(&r);
                Ok(())
            }
            Err(f) => {
                tracing::warn!(error = %f, "rule sync failed");
                Err(f)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn stream_once(
        &self,
        client: &reqwest::Client,
        up: Connected,
        out: &BatchTx,
        shutdown: &CancellationToken,
        summary: &std::sync::Mutex<SourceSummary>,
        dedup: &std::sync::Mutex<Dedup>,
        batcher: &tokio::sync::Mutex<Batcher>,
    ) -> Result<Ended, Failure> {
        let url = format!("{}/2/tweets/search/stream?{STREAM_PARAMS}", self.opts.base_url.trim_end_matches('/'));
        let resp = tokio::select! {
            () = shutdown.cancelled() => return Ok(Ended::Shutdown),
            r = client.get(&url).bearer_auth(self.opts.token.expose()).send() => r,
        }
        .map_err(|e| Failure::Network(without_url(&e)))?;
        let status = resp.status().as_u16();
        if status != 200 {
            let body = resp.text().await.unwrap_or_default();
            return Err(Failure::from_status(status, problem_detail(&body)));
        }
        up.mark();
        self.health.set_healthy();
        tracing::info!(source = "x_filtered_stream", "stream connected");
        let mut stream = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
        let mut flush_at = tokio::time::Instant::now() + self.batching.max_wait;
        // Data or a keep-alive must arrive before this; the batch-flush timer
        // must not restart it (each loop iteration would otherwise).
        let mut stall_at = tokio::time::Instant::now() + self.opts.stall_timeout;
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => return Ok(Ended::Shutdown),
                () = tokio::time::sleep_until(flush_at) => {
                    if let Some(b) = batcher.lock().await.flush()
                        && out.send(b).await.is_err()
                    {
                        return Ok(Ended::Shutdown);
                    }
                    flush_at = tokio::time::Instant::now() + self.batching.max_wait;
                    continue;
                }
                n = tokio::time::timeout_at(stall_at, stream.next()) => n,
            };
            let chunk = match next {
                Err(_) => {
                    return Err(Failure::Network(format!(
                        "stalled: no data or keep-alive for {} s",
                        self.opts.stall_timeout.as_secs()
                    )));
                }
                Ok(None) => {
                    if !buf.iter().all(u8::is_ascii_whitespace) {
                        tracing::warn!(
                            bytes = buf.len(),
                            "connection closed mid-message; the partial message is discarded"
                        );
                    }
                    return Err(Failure::Network("stream closed by the server".into()));
                }
                Ok(Some(Err(e))) => return Err(Failure::Network(without_url(&e))),
                Ok(Some(Ok(c))) => c,
            };
            stall_at = tokio::time::Instant::now() + self.opts.stall_timeout;
            buf.extend_from_slice(&chunk);
            // Complete lines only; the rest waits for the next chunk.
            let mut start = 0;
            while let Some(nl) = memchr::memchr(b'\n', &buf[start..]) {
                let line = &buf[start..start + nl];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                start += nl + 1;
                match classify(line) {
                    Line::KeepAlive => continue,
                    Line::Post(id) => {
                        let first = dedup.lock().map(|mut d| d.first(&id)).unwrap_or(true);
                        if !first {
                            tracing::debug!(id, "redelivered post dropped");
                            continue;
                        }
                    }
                    Line::Errors { disconnect: Some(reason) } => {
                        self.push(line, out, summary, batcher).await;
                        return Err(Failure::Http(503, format!("operational disconnect: {reason}")));
                    }
                    Line::Errors { disconnect: None } | Line::Other => {}
                }
                if !self.push(line, out, summary, batcher).await {
                    return Ok(Ended::Shutdown);
                }
            }
            buf.drain(..start);
        }
    }

    /// Add a record; false when the pipeline has gone away.
    async fn push(
        &self,
        line: &[u8],
        out: &BatchTx,
        summary: &std::sync::Mutex<SourceSummary>,
        batcher: &tokio::sync::Mutex<Batcher>,
    ) -> bool {
        let n = {
            let mut s = summary.lock().unwrap_or_else(|p| p.into_inner());
            s.records += 1;
            s.bytes += line.len() as u64;
            s.records
        };
        let full = batcher.lock().await.push(line, n);
        match full {
            Some(b) => out.send(b).await.is_ok(),
            None => true,
        }
    }
}

fn log_sync(r: &SyncReport) {
    tracing::info!(
        kept = r.kept,
        added = r.added.len(),
        deleted = r.deleted.len(),
        rejected = r.rejected.len(),
        "X rules synced"
    );
    for (id, reason) in &r.rejected {
        tracing::warn!(rule_id = %id, reason = %reason, "rule not sent to the X API");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RuleType;

    fn rule(t: &str, v: &str, extra: &[(&str, &str)]) -> Rule {
        let mut f = vec![("rule_id".into(), "1".into()), ("value".into(), v.into()), ("rule_type".into(), t.into())];
        f.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Rule::from_fields(f, RuleType::Track).expect("valid")
    }

    #[test]
    fn translation_by_type() {
        assert_eq!(to_v2(&rule("track", "Happy Birthday", &[])), Ok("happy birthday".into()));
        assert_eq!(to_v2(&rule("track", "#Sliding door", &[("orig_type", "hashtag")])), Ok("#sliding #door".into()));
        assert_eq!(to_v2(&rule("track", "-minus", &[])), Ok("\"-minus\"".into()));
        assert_eq!(
            to_v2(&rule("follow", "17919972", &[])),
            Ok("from:17919972 OR retweets_of:17919972 OR to:17919972".into())
        );
        assert!(to_v2(&rule("follow", "did:plc:x", &[])).is_err());
        assert_eq!(
            to_v2(&rule("locations", "-122.42,37.77,-122.40,37.79", &[])),
            Ok("bounding_box:[-122.42 37.77 -122.4 37.79]".into())
        );
        let e = to_v2(&rule("locations", "-122.75,36.8,-121.75,37.8", &[])).expect_err("too big");
        assert!(e.contains("25 miles"), "{e}");
        assert_eq!(to_v2(&rule("x_v2", "cats has:media -is:retweet", &[])), Ok("cats has:media -is:retweet".into()));
    }

    #[test]
    fn dedup_forgets_beyond_its_window() {
        let mut d = Dedup::new(2);
        assert!(d.first("a"));
        assert!(!d.first("a"));
        assert!(d.first("b"));
        assert!(d.first("c"));
        assert!(d.first("a"), "a fell out of the window");
    }

    #[test]
    fn lines_are_classified() {
        assert!(matches!(classify(b""), Line::KeepAlive));
        assert!(matches!(classify(br#"{"data":{"id":"5","text":"x"}}"#), Line::Post(id) if id == "5"));
        let op = br#"{"errors":[{"title":"operational-disconnect","disconnect_type":"UpstreamUncleanDisconnect","detail":"x","type":"https://api.twitter.com/2/problems/operational-disconnect"}]}"#;
        assert!(matches!(classify(op), Line::Errors { disconnect: Some(_) }));
        let other = br#"{"errors":[{"title":"Something else","detail":"y"}]}"#;
        assert!(matches!(classify(other), Line::Errors { disconnect: None }));
    }
}
