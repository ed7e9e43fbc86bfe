//! The `mastodon` source: a Mastodon server's streaming API over server-sent
//! events (Mastodon API docs, methods/streaming).
//!
//! * `GET /api/v1/streaming/public`, `/api/v1/streaming/public/local` or
//!   `/api/v1/streaming/hashtag?tag=NAME`, with `Authorization: Bearer` when a
//!   token is given (many servers require one for public streams).
//! * Events (WHATWG SSE framing: `event:` and `data:` lines, a blank line ends
//!   an event, lines starting with `:` are comments — Mastodon's `:thump`
//!   heartbeat):
//!   - `update`: a new Status, forwarded as it came; deduplicated by id;
//!   - `status.update`: an edit — a new version of a Status already seen,
//!     forwarded once more (deduplicated by id and `edited_at`); the decoder
//!     marks it as an edit;
//!   - `delete`: the id of a deleted Status, forwarded as the v1.1 delete
//!     notice `{"delete":{"status":{"id":"…","id_str":"…"}}}` (a control
//!     message, counted);
//!   - anything else (`notification`, `filters_changed` …) is proof of life only.
//! * An event cut by a dropped connection is discarded; the driver
//!   reconnects by the shared policy and drops redeliveries.
//! * **Gap-fill.** Each status carries its id as the source position; the
//!   last one the sink wrote is kept (in memory, and in Redis under the
//!   collector's key when coordination is on). Before a stream resumes
//!   (a reconnect, a restart, a standby's takeover) the statuses after it are
//!   fetched from the REST timeline (`/api/v1/timelines/public`, `…?local=true`
//!   or `/api/v1/timelines/tag/NAME`) with `min_id`, 40 a page, up to
//!   `backfill_pages` pages, oldest first.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;
use serde::Deserialize;

use crate::post::tolerant::{self, Id, Surprises, tolerant};

use super::backoff::Failure;
use super::http::{ByteStream, http_client, problem_detail, without_url};
use super::live::{Connection, Connector, Frame, Live, LiveContext, live_source_config};
use super::position::{CursorStore, Persister};
use super::{Source, SourceComponent, SourceContext, SourceError};
use crate::component::{BaseDir, Problems};
use crate::key_pool::PooledKey;
use crate::post::Format;
use crate::rules::RuleSnapshot;
use crate::secret::{Secret, SecretRef};
use crate::telemetry::Metrics;

/// Which public stream to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Stream {
    /// Every public post the server knows (federated timeline).
    #[default]
    #[serde(rename = "public")]
    Public,
    /// Public posts of the server's own accounts.
    #[serde(rename = "public:local")]
    PublicLocal,
    /// Public posts with one hashtag (`tag`).
    #[serde(rename = "hashtag")]
    Hashtag,
}

live_source_config! {
    /// `[source]` with `type = "mastodon"`.
    pub struct MastodonConfig {
        /// The server, e.g. `https://mastodon.social`.
        pub base_url: String,
        /// `public` (default), `public:local` or `hashtag`.
        #[serde(default)]
        pub stream: Stream,
        /// The hashtag (without `#`), with `stream = "hashtag"`.
        #[serde(default)]
        pub tag: Option<String>,
        /// `{ env = "MASTODON_TOKEN" }` or `{ file = "…" }`; optional.
        #[serde(default)]
        pub access_token: Option<SecretRef>,
        /// After an interruption, fetch the statuses posted since the last
        /// written one from the REST timeline: at most this many pages of
        /// 40 (0: off).
        #[serde(default = "default_backfill_pages")]
        pub backfill_pages: u64,
    }
    stall_timeout_secs: "No event and no heartbeat for this long: reconnect (servers send a heartbeat comment every few seconds).", 60 s;
    dedup_window: "Status versions remembered to drop redeliveries after a reconnect.", "super::live::default_dedup_window";
}

fn default_backfill_pages() -> u64 {
    10
}

impl MastodonConfig {
    /// The REST timeline matching the stream (gap-fill).
    fn timeline_url(&self) -> String {
        let base = self.base_url.trim_end_matches('/');
        match self.stream {
            Stream::Public => format!("{base}/api/v1/timelines/public"),
            Stream::PublicLocal => format!("{base}/api/v1/timelines/public?local=true"),
            Stream::Hashtag => {
                let tag = self.tag.as_deref().unwrap_or_default().trim_start_matches('#');
                format!("{base}/api/v1/timelines/tag/{}", urlencode(tag))
            }
        }
    }

    /// The stream's URL below the server.
    fn stream_url(&self) -> String {
        let base = self.base_url.trim_end_matches('/');
        match self.stream {
            Stream::Public => format!("{base}/api/v1/streaming/public"),
            Stream::PublicLocal => format!("{base}/api/v1/streaming/public/local"),
            Stream::Hashtag => {
                let tag = self.tag.as_deref().unwrap_or_default().trim_start_matches('#');
                format!("{base}/api/v1/streaming/hashtag?tag={}", urlencode(tag))
            }
        }
    }
}

impl SourceComponent for MastodonConfig {
    fn check(&self, p: &mut Problems<'_>) {
        p.url("base_url", &self.base_url, &["http", "https"]);
        let tag = self.tag.as_deref().map(|t| t.trim_start_matches('#')).unwrap_or_default();
        match (self.stream, tag.is_empty()) {
            (Stream::Hashtag, true) => p.add("tag", "stream = \"hashtag\" needs the hashtag to follow"),
            (Stream::Public | Stream::PublicLocal, false) => {
                p.add("tag", "only used with stream = \"hashtag\"");
            }
            _ => {}
        }
        p.range("backfill_pages", self.backfill_pages, 0, 1000);
        self.check_live(p);
    }

    fn resolve_paths(&mut self, base: &BaseDir) {
        if let Some(s) = &mut self.access_token {
            base.fix_secret(s);
        }
    }

    fn format(&self) -> Format {
        Format::Mastodon
    }

    fn live(&self) -> bool {
        true
    }

    fn build(&self, cx: &SourceContext) -> Result<Source, SourceError> {
        // Optional here: from the key pool when one is configured.
        let token = match (&cx.key_pool, &self.access_token) {
            (None, Some(s)) => Some(s.resolve().map_err(|e| SourceError::Config(format!("source.access_token: {e}")))?),
            _ => None,
        };
        let url = self.stream_url();
        let connector = MastodonConnector {
            client: http_client()?,
            url: url.clone(),
            token,
            max_record_bytes: cx.max_record_bytes,
            timeline_url: self.timeline_url(),
            backfill_pages: self.backfill_pages,
            position: cx.position.clone(),
            confirmed: cx.confirmed.clone(),
            read: Arc::default(),
            persister: None,
            metrics: cx.metrics.clone(),
        };
        let settings = self.live_settings();
        Ok(Source::new(Live::new(connector, settings, cx, format!("mastodon {url}")), self.format()))
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Opens the event stream.
#[derive(Debug)]
pub struct MastodonConnector {
    client: reqwest::Client,
    url: String,
    token: Option<Secret>,
    max_record_bytes: usize,
    /// The REST timeline of the same statuses (gap-fill).
    timeline_url: String,
    backfill_pages: u64,
    /// Where the last written status id is kept.
    position: CursorStore,
    /// Id of the last status the sink has written.
    confirmed: Arc<AtomicU64>,
    /// Highest status id read in this run (what is read is in the pipeline:
    /// a reconnect within the run fills from here).
    read: Arc<AtomicU64>,
    persister: Option<Persister>,
    metrics: Arc<Metrics>,
}

/// Statuses in a page of the timeline.
const PAGE: usize = 40;
/// How long one timeline page may take (the stream waits for the fill).
const TIMELINE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

impl MastodonConnector {
    /// The statuses after `since` from the REST timeline, oldest first, as
    /// records (a failure ends the fill early: the stream goes on).
    async fn backfill(&self, since: u64) -> Vec<Frame> {
        let mut found: Vec<(u64, Frame)> = Vec::new();
        let mut min_id = since;
        let mut complete = false;
        for _ in 0..self.backfill_pages {
            let sep = if self.timeline_url.contains('?') { '&' } else { '?' };
            let mut req = self
                .client
                .get(format!("{}{sep}min_id={min_id}&limit={PAGE}", self.timeline_url))
                .timeout(TIMELINE_TIMEOUT);
            if let Some(t) = &self.token {
                req = req.bearer_auth(t.expose());
            }
            let page = match req.send().await {
                Ok(r) if r.status().is_success() => r.bytes().await.map_err(|e| without_url(&e)),
                Ok(r) => Err(format!("HTTP {}", r.status().as_u16())),
                Err(e) => Err(without_url(&e)),
            };
            let statuses: Vec<Box<serde_json::value::RawValue>> = match page
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| format!("not a list of statuses: {e}")))
            {
                Ok(list) => list,
                Err(e) => {
                    tracing::warn!(error = %e, "mastodon: the timeline cannot fill the gap; the stream resumes");
                    break;
                }
            };
            let n = statuses.len();
            for raw in statuses {
                let bytes = raw.get().as_bytes().to_vec();
                if let Some((key, Some(id))) = version_key(&bytes) {
                    min_id = min_id.max(id);
                    found.push((id, Frame::Record { bytes, dedup: Some(key), checkpoint: Some(id) }));
                }
            }
            if n < PAGE {
                complete = true;
                break;
            }
        }
        if !complete && self.backfill_pages > 0 {
            tracing::warn!(
                pages = self.backfill_pages,
                statuses = found.len(),
                "mastodon: the gap is longer than backfill_pages × 40 statuses; the rest of it is not fetched"
            );
        }
        found.sort_by_key(|(id, _)| *id);
        Metrics::add(&self.metrics.gap_filled_posts, found.len() as u64);
        found.into_iter().map(|(_, f)| f).collect()
    }
}

impl Connector for MastodonConnector {
    type Connection = MastodonConnection;

    fn name(&self) -> &'static str {
        "mastodon"
    }

    const KEYED: bool = true;

    fn use_key(&mut self, key: &PooledKey) -> Result<(), String> {
        self.token = Some(key.field("access_token")?);
        Ok(())
    }

    async fn start(&mut self, _cx: &LiveContext) -> Result<(), Failure> {
        if let Some(p) = self.persister.take() {
            p.finish(self.read.load(Ordering::Acquire)).await;
        }
        if !self.position.is_none() {
            let (persister, stored) = Persister::start(&self.position, &self.confirmed, "Mastodon").await;
            if let Some(id) = stored {
                tracing::info!(status_id = id, "mastodon: last written status read back");
            }
            self.persister = Some(persister);
        }
        Ok(())
    }

    async fn finish(&mut self) {
        if let Some(p) = self.persister.take() {
            p.finish(self.read.load(Ordering::Acquire)).await;
        }
    }

    async fn connect(&mut self, _rules: &RuleSnapshot) -> Result<MastodonConnection, Failure> {
        let mut req = self.client.get(&self.url).header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(t) = &self.token {
            req = req.bearer_auth(t.expose());
        }
        let resp = req.send().await.map_err(|e| Failure::Network(without_url(&e)))?;
        let status = resp.status().as_u16();
        if status != 200 {
            let body = resp.text().await.unwrap_or_default();
            return Err(Failure::from_status(status, problem_detail(&body)));
        }
        // The stream is open (what is posted from now on comes on it): fill
        // the gap before it; statuses in both are dropped as redeliveries.
        let since = self.confirmed.load(Ordering::Acquire).max(self.read.load(Ordering::Acquire));
        let filled = if since > 0 && self.backfill_pages > 0 {
            // Mastodon's ids carry their creation time (ms) above 16 bits.
            let created_ms = since >> 16;
            if created_ms > 1_400_000_000_000 {
                let gap_secs = super::position::now_ms().saturating_sub(created_ms) / 1000;
                self.metrics.gap_seconds.store(gap_secs, Ordering::Relaxed);
            }
            let filled = self.backfill(since).await;
            tracing::info!(since_status = since, statuses = filled.len(), "mastodon: gap filled from the timeline");
            filled
        } else {
            Vec::new()
        };
        Ok(MastodonConnection {
            stream: Box::pin(resp.bytes_stream()),
            events: EventParser::new(self.max_record_bytes),
            arrived: None,
            filled,
            read: self.read.clone(),
        })
    }
}

/// One event stream.
pub struct MastodonConnection {
    stream: ByteStream,
    events: EventParser,
    /// When the last chunk came off the wire.
    arrived: Option<std::time::Instant>,
    /// Statuses of the gap, handed over before the stream's.
    filled: Vec<Frame>,
    /// The connector's highest status id read.
    read: Arc<AtomicU64>,
}

impl std::fmt::Debug for MastodonConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MastodonConnection").field("buffered", &self.events.buf.len()).finish()
    }
}

impl Connection for MastodonConnection {
    fn arrived(&self) -> Option<std::time::Instant> {
        self.arrived
    }

    async fn read(&mut self, frames: &mut Vec<Frame>) -> Result<(), Failure> {
        if !self.filled.is_empty() {
            self.arrived = Some(std::time::Instant::now());
            if let Some(Frame::Record { checkpoint: Some(id), .. }) = self.filled.last() {
                self.read.fetch_max(*id, Ordering::Release);
            }
            frames.append(&mut self.filled);
            return Ok(());
        }
        let chunk = match self.stream.next().await {
            None => {
                if self.events.partial() {
                    tracing::warn!("connection closed mid-event; the partial event is discarded");
                }
                return Err(Failure::Network("stream closed by the server".into()));
            }
            Some(Err(e)) => return Err(Failure::Network(without_url(&e))),
            Some(Ok(c)) => c,
        };
        self.arrived = Some(std::time::Instant::now());
        let from = frames.len();
        self.events.feed(&chunk, frames);
        let top = frames[from..]
            .iter()
            .filter_map(|f| match f {
                Frame::Record { checkpoint, .. } => *checkpoint,
                _ => None,
            })
            .max();
        if let Some(id) = top {
            self.read.fetch_max(id, Ordering::Release);
        }
        Ok(())
    }
}

/// Server-sent events, framed as the WHATWG spec says (lines end in `\n`,
/// `\r\n` or `\r`; a blank line dispatches; `:` starts a comment). An event
/// over `max` bytes is dropped as it arrives (reported once).
#[derive(Debug, Default)]
pub(crate) struct EventParser {
    max: usize,
    /// The current event went over `max`: its data is dropped.
    oversized: bool,
    /// Bytes of an unfinished line.
    buf: Vec<u8>,
    /// A `\r` ended the last chunk: a `\n` opening the next belongs to it.
    after_cr: bool,
    event: String,
    data: Vec<u8>,
    /// Any field seen since the last dispatch.
    pending: bool,
}

impl EventParser {
    /// Bytes held (an unfinished line and the current event's data).
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.buf.len() + self.data.len()
    }

    fn partial(&self) -> bool {
        self.pending || !self.buf.is_empty()
    }

    pub(crate) fn new(max: usize) -> EventParser {
        EventParser { max, ..EventParser::default() }
    }

    pub(crate) fn feed(&mut self, chunk: &[u8], frames: &mut Vec<Frame>) {
        let mut bytes = chunk;
        if self.after_cr && bytes.first() == Some(&b'\n') {
            bytes = &bytes[1..];
        }
        self.after_cr = false;
        while let Some(end) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            if self.buf.is_empty() {
                self.line(&bytes[..end], frames);
            } else {
                let mut l = std::mem::take(&mut self.buf);
                l.extend_from_slice(&bytes[..end]);
                self.line(&l, frames);
            }
            let crlf = bytes[end] == b'\r' && bytes.get(end + 1) == Some(&b'\n');
            if bytes[end] == b'\r' && end + 1 == bytes.len() {
                self.after_cr = true;
            }
            bytes = &bytes[end + if crlf { 2 } else { 1 }..];
        }
        if self.oversized || self.buf.len() + bytes.len() > self.max {
            // A line over the cap: keep nothing of it; the event is dropped.
            self.buf.clear();
            self.oversized = true;
            self.pending = true;
        } else {
            self.buf.extend_from_slice(bytes);
        }
    }

    fn line(&mut self, line: &[u8], frames: &mut Vec<Frame>) {
        if line.is_empty() {
            self.dispatch(frames);
            return;
        }
        if line[0] == b':' {
            frames.push(Frame::KeepAlive);
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => (&line[..i], line[i + 1..].strip_prefix(b" ").unwrap_or(&line[i + 1..])),
            None => (line, &b""[..]),
        };
        self.pending = true;
        match field {
            b"event" => self.event = String::from_utf8_lossy(value).into_owned(),
            b"data" if self.oversized || self.data.len() + value.len() + 1 > self.max => {
                self.oversized = true;
                self.data.clear();
            }
            b"data" => {
                if !self.data.is_empty() {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, frames: &mut Vec<Frame>) {
        let event = std::mem::take(&mut self.event);
        let data = std::mem::take(&mut self.data);
        if !std::mem::take(&mut self.pending) {
            return;
        }
        if std::mem::take(&mut self.oversized) {
            frames.push(Frame::Oversized);
            return;
        }
        frames.push(match event.as_str() {
            "update" | "status.update" => match version_key(&data) {
                Some((dedup, id)) => Frame::Record { bytes: data, dedup: Some(dedup), checkpoint: id },
                // Not a Status: the workers count it as malformed, with a preview.
                None => Frame::Record { bytes: data, dedup: None, checkpoint: None },
            },
            "delete" => {
                let id = String::from_utf8_lossy(&data).trim().to_owned();
                let quoted = serde_json::Value::from(id.as_str());
                Frame::Record {
                    bytes: format!(r#"{{"delete":{{"status":{{"id":{quoted},"id_str":{quoted}}}}}}}"#).into_bytes(),
                    dedup: Some(format!("delete:{id}")),
                    checkpoint: None,
                }
            }
            other => {
                tracing::debug!(event = other, "event ignored");
                Frame::KeepAlive
            }
        });
    }
}

/// `id` for a first version, `id@edited_at` for an edit: each version of a
/// status passes once; and the id as a number (the source position).
fn version_key(status: &[u8]) -> Option<(String, Option<u64>)> {
    tolerant! {
        struct Version<'a> in "status" {
            id: Id<'a>,
            edited_at: std::borrow::Cow<'a, str>,
        }
    }
    let text = std::str::from_utf8(status).ok()?;
    let v = tolerant::read_record::<Version<'_>>(text, "status", &Surprises::default()).ok()??;
    let id = v.id?;
    let number = id.as_str().parse().ok();
    let key = match v.edited_at {
        Some(at) => format!("{}@{at}", id.as_str()),
        None => id.into_cow().into_owned(),
    };
    Some((key, number))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pieces: &[&str]) -> Vec<Frame> {
        let mut p = EventParser::new(1 << 20);
        let mut frames = Vec::new();
        for piece in pieces {
            p.feed(piece.as_bytes(), &mut frames);
        }
        frames
    }

    /// A record as framed: its id (before any `@edited_at`) is its position.
    fn record(bytes: &str, dedup: Option<&str>) -> Frame {
        let checkpoint = dedup.and_then(|d| d.split('@').next()?.parse().ok());
        Frame::Record { bytes: bytes.as_bytes().to_vec(), dedup: dedup.map(str::to_owned), checkpoint }
    }

    #[test]
    fn events_are_framed_whatever_the_pieces() {
        let wire = ":thump\n\nevent: update\ndata: {\"id\":\"1\"}\n\nevent: status.update\r\ndata: {\"id\":\"1\",\"edited_at\":\"t\"}\r\n\r\nevent: delete\rdata: 7\r\r";
        let whole = parse(&[wire]);
        let expected = vec![
            Frame::KeepAlive,
            record("{\"id\":\"1\"}", Some("1")),
            record("{\"id\":\"1\",\"edited_at\":\"t\"}", Some("1@t")),
            record(r#"{"delete":{"status":{"id":"7","id_str":"7"}}}"#, Some("delete:7")),
        ];
        assert_eq!(whole, expected);
        // Byte by byte: the same frames.
        let bytes: Vec<String> = wire.chars().map(String::from).collect();
        let pieces: Vec<&str> = bytes.iter().map(String::as_str).collect();
        assert_eq!(parse(&pieces), expected);
    }

    #[test]
    fn multi_line_data_and_unknown_events() {
        let frames = parse(&["event: update\ndata: {\"id\":\ndata: \"2\"}\n\nevent: notification\ndata: {}\n\n"]);
        assert_eq!(frames, vec![record("{\"id\":\n\"2\"}", Some("2")), Frame::KeepAlive]);
        let mut p = EventParser::new(1 << 20);
        p.feed(b"event: update\ndata: {\"id\":\"3\"", &mut Vec::new());
        assert!(p.partial(), "a cut event is pending");
    }

    /// Issue 16, defect 8: an event over `max_record_bytes` is dropped as it
    /// arrives, once, and the stream goes on.
    #[test]
    fn an_event_over_the_cap_is_skipped() {
        let big = "x".repeat(300);
        let mut p = EventParser::new(100);
        let mut frames = Vec::new();
        for piece in ["event: update\ndata: ", &big[..150], &big[150..], "\n\nevent: update\ndata: {\"id\":\"4\"}\n\n"]
        {
            p.feed(piece.as_bytes(), &mut frames);
            assert!(p.buf.len() <= 100 && p.data.len() <= 100);
        }
        assert_eq!(frames, vec![Frame::Oversized, record("{\"id\":\"4\"}", Some("4"))]);
    }

    #[test]
    fn stream_urls_and_checks() {
        let cfg = |stream: Stream, tag: Option<&str>| MastodonConfig {
            base_url: "https://m.example/".into(),
            stream,
            tag: tag.map(str::to_owned),
            access_token: None,
            backfill_pages: 10,
            stall_timeout_secs: 60,
            dedup_window: 10,
            backoff_scale: 1.0,
        };
        assert_eq!(cfg(Stream::Public, None).stream_url(), "https://m.example/api/v1/streaming/public");
        assert_eq!(cfg(Stream::PublicLocal, None).stream_url(), "https://m.example/api/v1/streaming/public/local");
        assert_eq!(
            cfg(Stream::Hashtag, Some("#Rust Lang")).stream_url(),
            "https://m.example/api/v1/streaming/hashtag?tag=Rust%20Lang"
        );
        let problems = |c: MastodonConfig| {
            let mut out = Vec::new();
            c.check(&mut Problems::new("source", &mut out));
            out.into_iter().map(|p| p.key).collect::<Vec<_>>()
        };
        assert_eq!(problems(cfg(Stream::Hashtag, None)), ["source.tag"]);
        assert_eq!(problems(cfg(Stream::Public, Some("x"))), ["source.tag"]);
        assert!(problems(cfg(Stream::Hashtag, Some("rust"))).is_empty());
    }
}
