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

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;

use crate::post::tolerant::{self, Id, Present, Surprises, tolerant};
use tokio_util::sync::CancellationToken;

use super::backoff::Failure;
use super::http::{ByteStream, Lines, Piece, http_client, problem_detail, without_url};
use super::live::{Connection, Connector, Frame, Live, LiveContext, credential, live_source_config};
use super::position::{CursorStore, Persister, now_ms};
use super::{Source, SourceComponent, SourceContext, SourceError};
use crate::component::{BaseDir, Problems, yes};
use crate::key_pool::{PooledKey, SecretCell};
use crate::post::Format;
use crate::rules::{Criterion, RemoteRuleIds, Rule, RuleSnapshot};
use crate::secret::SecretRef;
use crate::telemetry::Metrics;

/// Expansions and fields requested on the stream: what the post view needs.
pub const STREAM_PARAMS: &str = "expansions=author_id,referenced_tweets.id,referenced_tweets.id.author_id,in_reply_to_user_id,geo.place_id,entities.mentions.username\
&tweet.fields=author_id,created_at,entities,geo,in_reply_to_user_id,lang,note_tweet,referenced_tweets,conversation_id,public_metrics,source\
&user.fields=username,name,verified,created_at\
&place.fields=full_name,geo,country_code,place_type";

/// Longest side of a `bounding_box:` rule the v2 API accepts (miles).
const MAX_BOX_SIDE_MILES: f64 = 25.0;

/// A v2 rule as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RemoteRule {
    /// A string today; a JSON number in early v2 (2021): both are taken.
    #[serde(deserialize_with = "string_or_integer")]
    pub id: String,
    pub value: String,
    #[serde(default)]
    pub tag: Option<String>,
}

/// An id the API sent as a string or, in early v2, as a JSON number.
fn string_or_integer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Number(n) if n.is_u64() || n.is_i64() => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!("a rule id must be a string or an integer, not {other}"))),
    }
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
        Criterion::Polygon { shape } => polygon_to_v2(shape),
        Criterion::Verbatim => Ok(rule.value().to_owned()),
    }
}

/// More boxes than any tier's rule length could hold (1024 characters hold
/// about 20): refused before they are written out.
const MAX_V2_BOXES: usize = 200;

/// A polygon as `bounding_box:` operators of at most 25 miles a side
/// (slightly less, so rounding outward keeps them within the limit).
fn polygon_to_v2(shape: &crate::rules::geometry::Shape) -> Result<String, String> {
    let env = shape.envelope();
    let side = MAX_BOX_SIDE_MILES * 0.99;
    let widest = env.south.abs().max(env.north.abs()).min(89.0).to_radians().cos();
    let (lng, lat) = (side / (MILES_PER_DEGREE * widest), side / MILES_PER_DEGREE);
    let boxes = crate::rules::cover::cover_by_size(shape.polygons(), lng, lat);
    if boxes.len() > MAX_V2_BOXES {
        return Err(format!(
            "the polygon spans {:.0} × {:.0} miles and needs {} boxes of at most {MAX_BOX_SIDE_MILES} miles a side (the v2 API's limit; at most {MAX_V2_BOXES} are written): collect it with the v1.1 filter, Jetstream or Mastodon, or split it",
            (env.east - env.west) * MILES_PER_DEGREE * widest,
            (env.north - env.south) * MILES_PER_DEGREE,
            boxes.len()
        ));
    }
    let parts: Vec<String> = boxes
        .iter()
        .map(|b| {
            let b = crate::rules::cover::round_out(b, 1e5);
            format!("bounding_box:[{} {} {} {}]", b.west, b.south, b.east, b.north)
        })
        .collect();
    Ok(if parts.len() == 1 { parts.join("") } else { format!("({})", parts.join(" OR ")) })
}

/// What a sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub kept: usize,
    pub added: Vec<String>,
    pub deleted: Vec<String>,
    /// `(rule_id, reason)`: not translatable, over a tier limit, or refused by the API.
    pub rejected: Vec<(String, String)>,
    /// `(server id, rule_id)` of every rule the app has after the sync: what
    /// `matching_rules` ids resolve to.
    pub ids: Vec<(String, String)>,
}

/// The API's rules endpoints.
#[derive(Debug, Clone)]
pub struct RulesApi {
    client: reqwest::Client,
    base: String,
    token: SecretCell,
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
    pub fn new(client: reqwest::Client, base: &str, token: SecretCell) -> RulesApi {
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
                .bearer_auth(self.token.get().expose())
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
                    match r.criterion() {
                        Criterion::Polygon { .. } => format!(
                            "{} characters ({} bounding boxes of at most {MAX_BOX_SIDE_MILES} miles a side cover the polygon); the tier allows {max_len}: collect it with the v1.1 filter, Jetstream or Mastodon, or split it",
                            v.chars().count(),
                            v.matches("bounding_box:").count()
                        ),
                        _ => format!("{} characters; the tier allows {max_len}", v.chars().count()),
                    },
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
        report.ids = remote
            .iter()
            .filter_map(|r| Some((r.id.clone(), r.tag.clone().filter(|t| wanted.contains(&(t, r.value.as_str())))?)))
            .collect();
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
            report.ids.extend(page.data.into_iter().filter_map(|r| Some((r.id, r.tag?))));
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

tolerant! {
    /// What the source reads of a stream line: the post's id (a string, or a
    /// number in a drifted message), and whether it carries `errors`.
    struct Peek<'a> in "message" {
        data: PeekData<'a>,
        errors: Present,
    }
}

tolerant! {
    struct PeekData<'a> in "tweet" {
        id: Id<'a>,
    }
}

/// The `errors` of an in-stream error message (read only when present).
#[derive(Deserialize)]
struct Errors {
    #[serde(default)]
    errors: Vec<ApiError>,
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
    let Ok(text) = crate::post::text(line) else { return Line::Other };
    let peek = match tolerant::read_record::<Peek<'_>>(text, "message", &Surprises::default()) {
        Ok(Some(p)) => p,
        _ => return Line::Other,
    };
    if let Some(id) = peek.data.and_then(|d| d.id) {
        return Line::Post(id.into_cow().into_owned());
    }
    match peek.errors.map(|_| serde_json::from_str::<Errors>(text)) {
        Some(Ok(Errors { errors: errs })) => {
            // Operational disconnects: match on title / type (disconnect_type
            // values are not a stable contract).
            let d = errs.iter().find(|e| {
                e.title.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("operational-disconnect"))
                    || e.kind.as_deref().is_some_and(|t| t.ends_with("/operational-disconnect"))
                    || e.title.as_deref().is_some_and(|t| t.contains("ConnectionException"))
            });
            Line::Errors { disconnect: d.map(ApiError::reason) }
        }
        Some(Err(_)) => Line::Errors { disconnect: None },
        None => Line::Other,
    }
}

live_source_config! {
    /// `[source]` with `type = "x_filtered_stream"`.
    pub struct XStreamConfig {
        /// API root (tests and enterprise endpoints point elsewhere).
        #[serde(default = "default_base")]
        pub base_url: String,
        /// `{ env = "X_BEARER_TOKEN" }` or `{ file = "…" }`. Not needed when
        /// `[coordination.api_keys]` hands out keys (field `bearer_token`).
        #[serde(default)]
        pub bearer_token: Option<SecretRef>,
        /// Make the app's stream rules equal to the local rules.
        #[serde(default = "yes")]
        pub sync_rules: bool,
        /// The tier's rule count.
        #[serde(default = "default_max_rules")]
        pub max_rules: usize,
        /// The tier's rule length (characters).
        #[serde(default = "default_max_rule_length")]
        pub max_rule_length: usize,
        /// After an interruption (a reconnect, a restart, a standby taking
        /// over), ask X for the posts of up to this many minutes back
        /// (`backfill_minutes`, 1–5; billed as posts). The request covers
        /// the gap since the last post the sink wrote, rounded up to a
        /// minute; a first start with no recorded position asks for all of
        /// it. 0: off.
        #[serde(default)]
        pub backfill_minutes: u64,
    }
    stall_timeout_secs: "No data and no keep-alive for this long: reconnect (X sends a keep-alive every 20 s).", 20 s;
}

fn default_base() -> String {
    "https://api.x.com".into()
}
fn default_max_rules() -> usize {
    1000
}
fn default_max_rule_length() -> usize {
    1024
}

impl SourceComponent for XStreamConfig {
    fn check(&self, p: &mut Problems<'_>) {
        p.url("base_url", &self.base_url, &["http", "https"]);
        p.range("max_rules", self.max_rules as u64, 1, 100_000);
        p.range("max_rule_length", self.max_rule_length as u64, 1, 65_536);
        p.range("backfill_minutes", self.backfill_minutes, 0, 5);
        self.check_live(p);
    }

    fn resolve_paths(&mut self, base: &BaseDir) {
        if let Some(s) = &mut self.bearer_token {
            base.fix_secret(s);
        }
    }

    fn format(&self) -> Format {
        Format::XV2
    }

    fn live(&self) -> bool {
        true
    }

    fn build(&self, cx: &SourceContext) -> Result<Source, SourceError> {
        let token = SecretCell::new(credential(cx, "bearer_token", self.bearer_token.as_ref())?);
        let client = http_client()?;
        let base_url = self.base_url.trim_end_matches('/').to_owned();
        let connector = XConnector {
            rules_api: RulesApi::new(client.clone(), &base_url, token.clone()),
            client,
            stream_url: format!("{base_url}/2/tweets/search/stream?{STREAM_PARAMS}"),
            token,
            sync_rules: self.sync_rules,
            max_rules: self.max_rules,
            max_rule_length: self.max_rule_length,
            max_record_bytes: cx.max_record_bytes,
            remote_ids: cx.remote_rule_ids.clone(),
            syncer: None,
            backfill_minutes: self.backfill_minutes,
            position: cx.position.clone(),
            confirmed: cx.confirmed.clone(),
            read: Arc::default(),
            persister: None,
            metrics: cx.metrics.clone(),
            refusal: Arc::default(),
        };
        let settings = self.live_settings();
        Ok(Source::new(Live::new(connector, settings, cx, format!("x_filtered_stream {base_url}")), self.format()))
    }
}

/// Connects to the filtered stream; keeps the app's rules in sync beside it.
#[derive(Debug)]
pub struct XConnector {
    client: reqwest::Client,
    rules_api: RulesApi,
    stream_url: String,
    /// Shared with the rule-sync task: a pool key replaces it.
    token: SecretCell,
    sync_rules: bool,
    max_rules: usize,
    max_rule_length: usize,
    max_record_bytes: usize,
    /// Server rule id → local rule, read by the workers.
    remote_ids: Arc<RemoteRuleIds>,
    /// The rule-sync task and its stop signal.
    syncer: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
    /// `backfill_minutes` (0: off).
    backfill_minutes: u64,
    /// Where the last written post's read time is kept.
    position: CursorStore,
    /// Read time (Unix ms) of the last post the sink has written.
    confirmed: Arc<AtomicU64>,
    /// Read time of the last post read in this run (what is read is in the
    /// pipeline: a reconnect within the run asks from here).
    read: Arc<AtomicU64>,
    persister: Option<Persister>,
    metrics: Arc<Metrics>,
    /// Set by the rule-sync task when the API refuses the credentials: the
    /// stream ends with the refusal, so a pool key is marked bad and the
    /// next one taken (as when the stream itself refuses).
    refusal: Arc<Refusal>,
}

/// A refusal of the credentials seen beside the stream (rule sync).
#[derive(Debug, Default)]
pub struct Refusal {
    notify: tokio::sync::Notify,
    why: std::sync::Mutex<Option<(u16, String)>>,
}

impl Refusal {
    fn set(&self, status: u16, why: String) {
        if let Ok(mut w) = self.why.lock() {
            *w = Some((status, why));
        }
        self.notify.notify_one();
    }

    /// Wait for a refusal.
    async fn refused(&self) -> Failure {
        loop {
            self.notify.notified().await;
            if let Some((status, why)) = self.why.lock().ok().and_then(|mut w| w.take()) {
                return Failure::Unauthorized(status, format!("rule sync: {why}"));
            }
        }
    }
}

/// Added to the gap before it is rounded to minutes: the position is when a
/// post was *read*, X backfills by when posts were *created*; a post created
/// a little before the last written one may have been read after it.
pub const BACKFILL_MARGIN_MS: u64 = 30_000;

/// The `backfill_minutes` to ask for: the gap since `since_ms` plus
/// [`BACKFILL_MARGIN_MS`], rounded up to whole minutes, within 1..=`max`;
/// all of `max` when no position is known (`since_ms` = 0). `None` when off.
pub fn backfill_for(max: u64, since_ms: u64, now_ms: u64) -> Option<u64> {
    if max == 0 {
        return None;
    }
    if since_ms == 0 {
        return Some(max);
    }
    let gap_ms = now_ms.saturating_sub(since_ms) + BACKFILL_MARGIN_MS;
    Some(gap_ms.div_ceil(60_000).clamp(1, max))
}

impl XConnector {
    async fn sync(&self, rules: &[Rule]) -> Result<(), Failure> {
        match self.rules_api.sync(rules, self.max_rules, self.max_rule_length).await {
            Ok(r) => {
                log_sync(&r, &self.remote_ids);
                Ok(())
            }
            Err(f) => {
                tracing::warn!(error = %f, "rule sync failed");
                Err(f)
            }
        }
    }
}

impl Connector for XConnector {
    type Connection = XConnection;

    fn name(&self) -> &'static str {
        "x_filtered_stream"
    }

    /// First sync before streaming, so attribution is right from the start;
    /// then a task syncs every change (bursts coalesced) while the stream runs.
    async fn start(&mut self, cx: &LiveContext) -> Result<(), Failure> {
        // Started again after a pool key was refused: one sync task only.
        self.finish().await;
        if !self.position.is_none() {
            let (persister, stored) = Persister::start(&self.position, &self.confirmed, "X stream").await;
            if let Some(ms) = stored {
                tracing::info!(last_written_ms = ms, "X stream: last written position read back");
            }
            self.persister = Some(persister);
        }
        if !self.sync_rules {
            // Rules are managed elsewhere: learn their ids once, so posts
            // whose `matching_rules` carry no tag are still attributed.
            match self.rules_api.list().await {
                Ok(remote) => self.remote_ids.replace(remote.into_iter().filter_map(|r| Some((r.id, r.tag?)))),
                Err(f @ Failure::Unauthorized(..)) => return Err(f),
                Err(f) => tracing::warn!(error = %f, "could not list the app's rules; attributing by tag only"),
            }
            return Ok(());
        }
        let mut rx = cx.rules.clone();
        let rules = rx.borrow_and_update().rules.clone();
        let first = self.sync(&rules).await;
        if let Err(f @ Failure::Unauthorized(..)) = first {
            return Err(f);
        }
        let (api, max_rules, max_len) = (self.rules_api.clone(), self.max_rules, self.max_rule_length);
        let remote_ids = self.remote_ids.clone();
        let (stop, health) = (cx.shutdown.child_token(), cx.health.clone());
        // A fresh signal per start (a new key): an old refusal is not this key's.
        self.refusal = Arc::default();
        let refusal = self.refusal.clone();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        r = rx.changed() => if r.is_err() { return },
                    }
                    // Coalesce bursts of changes.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let rules = rx.borrow_and_update().rules.clone();
                    match api.sync(&rules, max_rules, max_len).await {
                        Ok(r) => log_sync(&r, &remote_ids),
                        Err(Failure::Unauthorized(status, why)) => {
                            health.set_unhealthy(format!("X API refused the credentials during rule sync: {why}"));
                            tracing::error!(status, error = %why, "rule sync refused; ending the stream with the refusal");
                            refusal.set(status, why);
                            return;
                        }
                        Err(f) => tracing::warn!(error = %f, "rule sync failed; will retry on the next change"),
                    }
                }
            }
        });
        self.syncer = Some((stop, task));
        Ok(())
    }

    async fn connect(&mut self, _rules: &RuleSnapshot) -> Result<XConnection, Failure> {
        let now = now_ms();
        let confirmed = self.confirmed.load(Ordering::Acquire).max(self.read.load(Ordering::Acquire));
        let backfill = backfill_for(self.backfill_minutes, confirmed, now);
        let url = match backfill {
            Some(m) => format!("{}&backfill_minutes={m}", self.stream_url),
            None => self.stream_url.clone(),
        };
        if confirmed > 0 {
            let gap_secs = now.saturating_sub(confirmed) / 1000;
            self.metrics.gap_seconds.store(gap_secs, Ordering::Relaxed);
            match backfill {
                Some(m) => tracing::info!(gap_secs, backfill_minutes = m, "X stream: asking for the gap"),
                None if gap_secs > 0 => tracing::info!(
                    gap_secs,
                    "X stream: posts of the gap since the last written one are not asked for (backfill_minutes = 0)"
                ),
                None => {}
            }
        } else if let Some(m) = backfill {
            tracing::info!(backfill_minutes = m, "X stream: no position recorded; asking for the last minutes");
        }
        let resp = self
            .client
            .get(&url)
            .bearer_auth(self.token.get().expose())
            .send()
            .await
            .map_err(|e| Failure::Network(without_url(&e)))?;
        let status = resp.status().as_u16();
        if status != 200 {
            let body = resp.text().await.unwrap_or_default();
            return Err(Failure::from_status(status, problem_detail(&body)));
        }
        Ok(XConnection {
            stream: Box::pin(resp.bytes_stream()),
            lines: Lines::new(self.max_record_bytes),
            arrived: None,
            backfilling: backfill.map(|_| (now, self.metrics.clone())),
            refusal: self.refusal.clone(),
            read: self.read.clone(),
        })
    }

    const KEYED: bool = true;

    fn use_key(&mut self, key: &PooledKey) -> Result<(), String> {
        self.token.set(key.field("bearer_token")?);
        Ok(())
    }

    async fn finish(&mut self) {
        if let Some((stop, task)) = self.syncer.take() {
            stop.cancel();
            let _ = task.await;
        }
        if let Some(p) = self.persister.take() {
            p.finish(self.read.load(Ordering::Acquire)).await;
        }
    }
}

/// One filtered-stream connection: `\r\n`-terminated lines.
pub struct XConnection {
    stream: ByteStream,
    lines: Lines,
    /// When the last chunk came off the wire.
    arrived: Option<std::time::Instant>,
    /// Asked for a backfill at (Unix ms): posts created before it are
    /// counted as filled until the first one created after it.
    backfilling: Option<(u64, Arc<Metrics>)>,
    /// The rule sync's refusal of the credentials ends the connection.
    refusal: Arc<Refusal>,
    /// The connector's read time of the last post read.
    read: Arc<AtomicU64>,
}

/// Whether a filtered-stream post was created before `before_ms` (`None`: no
/// readable `data.created_at`).
fn created_before(line: &[u8], before_ms: u64) -> Option<bool> {
    #[derive(serde::Deserialize)]
    struct Data<'a> {
        #[serde(borrow)]
        created_at: Option<std::borrow::Cow<'a, str>>,
    }
    #[derive(serde::Deserialize)]
    struct Msg<'a> {
        #[serde(borrow)]
        data: Option<Data<'a>>,
    }
    let m: Msg<'_> = serde_json::from_slice(line).ok()?;
    let at = chrono::DateTime::parse_from_rfc3339(&m.data?.created_at?).ok()?;
    Some((at.timestamp_millis().max(0) as u64) < before_ms)
}

impl std::fmt::Debug for XConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XConnection").field("buffered", &self.lines.pending()).finish()
    }
}

impl Connection for XConnection {
    fn arrived(&self) -> Option<std::time::Instant> {
        self.arrived
    }

    async fn read(&mut self, frames: &mut Vec<Frame>) -> Result<(), Failure> {
        let next = tokio::select! {
            biased;
            f = self.refusal.refused() => return Err(f),
            next = self.stream.next() => next,
        };
        let chunk = match next {
            None => {
                if self.lines.pending() > 0 {
                    tracing::warn!(
                        bytes = self.lines.pending(),
                        "connection closed mid-message; the partial message is discarded"
                    );
                }
                return Err(Failure::Network("stream closed by the server".into()));
            }
            Some(Err(e)) => return Err(Failure::Network(without_url(&e))),
            Some(Ok(c)) => c,
        };
        self.arrived = Some(std::time::Instant::now());
        let read_ms = now_ms();
        let from = frames.len();
        let backfilling = &mut self.backfilling;
        self.lines.feed(&chunk, |piece| {
            frames.push(match piece {
                Piece::Oversized => Frame::Oversized,
                Piece::Line(line) => {
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    match classify(line) {
                        Line::KeepAlive => Frame::KeepAlive,
                        Line::Post(id) => {
                            if let Some((since, metrics)) = backfilling.as_ref() {
                                match created_before(line, *since) {
                                    Some(true) => Metrics::add(&metrics.gap_filled_posts, 1),
                                    Some(false) => *backfilling = None,
                                    None => {}
                                }
                            }
                            Frame::Record { bytes: line.to_vec(), dedup: Some(id), checkpoint: Some(read_ms) }
                        }
                        Line::Errors { disconnect: Some(reason) } => Frame::End {
                            record: Some(line.to_vec()),
                            failure: Failure::Http(503, format!("operational disconnect: {reason}")),
                        },
                        Line::Errors { disconnect: None } | Line::Other => {
                            Frame::Record { bytes: line.to_vec(), dedup: None, checkpoint: None }
                        }
                    }
                }
            });
        });
        if frames[from..].iter().any(|f| matches!(f, Frame::Record { checkpoint: Some(_), .. })) {
            self.read.fetch_max(read_ms, Ordering::Release);
        }
        Ok(())
    }
}

/// Log what a sync did and publish the server ids it learnt.
fn log_sync(r: &SyncReport, remote_ids: &RemoteRuleIds) {
    remote_ids.replace(r.ids.iter().cloned());
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
#[path = "x_stream_tests.rs"]
mod tests;
