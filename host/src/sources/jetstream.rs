//! The `jetstream` source: Bluesky's Jetstream over WebSocket.
//!
//! * Subscribes with `wantedCollections` / `wantedDids` and, with
//!   `compress = true`, receives zstd frames compressed with Jetstream's shared
//!   dictionary (compiled in, `host/data/`).
//! * Every event carries `time_us`; each batch records the highest as its
//!   checkpoint. The sink confirms a checkpoint once the batch is written; the
//!   confirmed cursor is persisted (a file, written atomically, or a Redis key)
//!   every second and at shutdown.
//! * On start and on every reconnect the subscription resumes from the
//!   confirmed cursor minus `cursor_rewind_secs`, so nothing confirmed is
//!   missed; events seen again within this run are dropped by (DID, time).
//! * The driver ([`super::live`]) reconnects by [`super::backoff`]; no event
//!   for `stall_timeout_secs` is a stall.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;

use crate::post::tolerant::{self, Surprises, tolerant};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::backoff::Failure;
use super::live::{Connection, Connector, Frame, Live, LiveContext, live_source_config};
use super::position::Persister;
use super::{Source, SourceComponent, SourceContext, SourceError};
use crate::component::{BaseDir, Problems};
use crate::post::Format;
use crate::post::jetstream::time_us;
use crate::rules::RuleSnapshot;

/// Jetstream's zstd dictionary for `compress=true`.
pub const DICTIONARY: &[u8] = include_bytes!("../../data/jetstream-legacy-subscribe.zdict");

pub use super::position::CursorStore;

live_source_config! {
    /// `[source]` with `type = "jetstream"`.
    pub struct JetstreamConfig {
        /// Subscribe endpoint.
        #[serde(default = "default_url")]
        pub url: String,
        /// Collections to receive (Jetstream filters server-side).
        #[serde(default = "default_collections")]
        pub wanted_collections: Vec<String>,
        /// Only these repositories (DIDs); empty for all.
        #[serde(default)]
        pub wanted_dids: Vec<String>,
        /// zstd-compressed frames (Jetstream's dictionary is built in).
        #[serde(default)]
        pub compress: bool,
        /// File holding the confirmed cursor (time_us), to resume after a restart.
        #[serde(default)]
        pub cursor_path: Option<PathBuf>,
        /// Or a Redis key for it (uses `[coordination]`'s server).
        #[serde(default)]
        pub cursor_redis_key: Option<String>,
        /// Resume this much before the saved cursor (no gap at the cost of a
        /// few repeats, which dedup drops).
        #[serde(default = "default_rewind_secs")]
        pub cursor_rewind_secs: u64,
    }
    stall_timeout_secs: "No event for this long: reconnect.", 60 s;
    dedup_window: "Events remembered by (DID, time) to drop repeats after a reconnect.", "default_dedup_window";
}

fn default_url() -> String {
    "wss://jetstream2.us-east.bsky.network/subscribe".into()
}
fn default_collections() -> Vec<String> {
    vec!["app.bsky.feed.post".into()]
}
fn default_rewind_secs() -> u64 {
    5
}
/// A firehose: a larger window than the X sources'.
fn default_dedup_window() -> usize {
    200_000
}

impl SourceComponent for JetstreamConfig {
    fn check(&self, p: &mut Problems<'_>) {
        p.url("url", &self.url, &["ws", "wss"]);
        if self.cursor_path.is_some() && self.cursor_redis_key.is_some() {
            p.add("cursor_path", "give cursor_path or cursor_redis_key, not both");
        }
        p.range("cursor_rewind_secs", self.cursor_rewind_secs, 0, 86_400);
        self.check_live(p);
    }

    fn resolve_paths(&mut self, base: &BaseDir) {
        if let Some(p) = &mut self.cursor_path {
            base.fix(p);
        }
    }

    fn format(&self) -> Format {
        Format::Jetstream
    }

    fn live(&self) -> bool {
        true
    }

    fn files(&self) -> Vec<(&'static str, &std::path::Path)> {
        self.cursor_path.iter().map(|p| ("cursor_path", p.as_path())).collect()
    }

    fn build(&self, cx: &SourceContext) -> Result<Source, SourceError> {
        let cursor = match (&self.cursor_path, &self.cursor_redis_key, &cx.redis) {
            (Some(p), _, _) => CursorStore::File(p.clone()),
            (None, Some(k), Some(conn)) => CursorStore::Redis { conn: conn.clone(), key: k.clone() },
            (None, Some(_), None) => {
                return Err(SourceError::Config(
                    "source.cursor_redis_key needs a Redis server ([coordination] or redis rules)".into(),
                ));
            }
            (None, None, _) => cx.position.clone(),
        };
        if self.compress {
            decompressor().map_err(|e| SourceError::Task(format!("zstd dictionary: {e}")))?;
        }
        let connector = JetstreamConnector {
            url: self.url.clone(),
            wanted_collections: self.wanted_collections.clone(),
            wanted_dids: self.wanted_dids.clone(),
            compress: self.compress,
            rewind: Duration::from_secs(self.cursor_rewind_secs),
            cursor,
            confirmed: cx.confirmed.clone(),
            persister: None,
            metrics: cx.metrics.clone(),
            read: Arc::default(),
        };
        let settings = self.live_settings();
        Ok(Source::new(Live::new(connector, settings, cx, format!("jetstream {}", self.url)), self.format()))
    }
}

/// A zstd context with Jetstream's dictionary loaded.
fn decompressor() -> std::io::Result<zstd::bulk::Decompressor<'static>> {
    zstd::bulk::Decompressor::with_dictionary(DICTIONARY)
}

/// Subscribes from the confirmed cursor; persists the cursor beside.
#[derive(Debug)]
pub struct JetstreamConnector {
    pub url: String,
    pub wanted_collections: Vec<String>,
    pub wanted_dids: Vec<String>,
    pub compress: bool,
    pub rewind: Duration,
    cursor: CursorStore,
    /// Highest `time_us` the sink has written.
    confirmed: Arc<AtomicU64>,
    /// Writes the confirmed cursor while the source runs.
    persister: Option<Persister>,
    metrics: Arc<crate::telemetry::Metrics>,
    /// The highest `time_us` read in this run.
    read: Arc<AtomicU64>,
}

/// The subscribe URL for a cursor.
pub fn subscribe_url(opts: &JetstreamConnector, cursor: Option<u64>) -> String {
    let mut params: Vec<String> = Vec::new();
    for c in &opts.wanted_collections {
        params.push(format!("wantedCollections={}", urlencode(c)));
    }
    for d in &opts.wanted_dids {
        params.push(format!("wantedDids={}", urlencode(d)));
    }
    if opts.compress {
        params.push("compress=true".into());
    }
    if let Some(c) = cursor {
        params.push(format!("cursor={c}"));
    }
    let sep = if opts.url.contains('?') { '&' } else { '?' };
    if params.is_empty() { opts.url.clone() } else { format!("{}{sep}{}", opts.url, params.join("&")) }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Identity of an event for de-duplication: `(did, time_us)`.
fn event_key(bytes: &[u8]) -> Option<String> {
    tolerant! {
        struct K<'a> in "event" {
            did: std::borrow::Cow<'a, str>,
            time_us: u64,
        }
    }
    let text = std::str::from_utf8(bytes).ok()?;
    let k = tolerant::read_record::<K<'_>>(text, "event", &Surprises::default()).ok()??;
    Some(format!("{}:{}", k.did?, k.time_us?))
}

impl Connector for JetstreamConnector {
    type Connection = JetstreamConnection;

    fn name(&self) -> &'static str {
        "jetstream"
    }

    /// Load the saved cursor; persist the confirmed one every second (and
    /// once more in `finish`).
    async fn start(&mut self, _cx: &LiveContext) -> Result<(), Failure> {
        if let Some(p) = self.persister.take() {
            p.finish(self.read.load(Ordering::Acquire)).await;
        }
        let (persister, stored) = Persister::start(&self.cursor, &self.confirmed, "Jetstream").await;
        if let Some(c) = stored {
            tracing::info!(cursor = c, "resuming Jetstream from the saved cursor");
        }
        self.persister = Some(persister);
        Ok(())
    }

    async fn connect(&mut self, _rules: &RuleSnapshot) -> Result<JetstreamConnection, Failure> {
        let confirmed = self.confirmed.load(Ordering::Acquire);
        let cursor = (confirmed > 0).then(|| confirmed.saturating_sub(self.rewind.as_micros() as u64));
        let url = subscribe_url(self, cursor);
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(resp) => {
                Failure::from_status(resp.status().as_u16(), format!("subscribe refused: {}", resp.status()))
            }
            other => Failure::Network(other.to_string()),
        })?;
        let decompressor = match self.compress {
            true => Some(decompressor().map_err(|e| Failure::Network(format!("zstd dictionary: {e}")))?),
            false => None,
        };
        tracing::info!(source = "jetstream", cursor = ?cursor, "subscribed");
        let now_us = super::position::now_ms() * 1000;
        if confirmed > 0 {
            let gap_secs = now_us.saturating_sub(confirmed) / 1_000_000;
            self.metrics.gap_seconds.store(gap_secs, Ordering::Relaxed);
            tracing::info!(source = "jetstream", gap_secs, "resuming from the last written event: the gap is replayed");
        }
        let filling = cursor.map(|_| (now_us, self.metrics.clone()));
        Ok(JetstreamConnection { ws: Box::new(ws), decompressor, arrived: None, filling, read: self.read.clone() })
    }

    /// The sink has confirmed what it wrote by now: save it one last time.
    async fn finish(&mut self) {
        if let Some(p) = self.persister.take() {
            p.finish(self.read.load(Ordering::Acquire)).await;
        }
    }
}

type WebSocket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One subscription.
pub struct JetstreamConnection {
    ws: Box<WebSocket>,
    decompressor: Option<zstd::bulk::Decompressor<'static>>,
    /// When the last message came off the wire.
    arrived: Option<std::time::Instant>,
    /// Subscribed from a cursor at (µs): events before it are the gap's,
    /// counted until the first one after it.
    filling: Option<(u64, Arc<crate::telemetry::Metrics>)>,
    /// The connector's highest `time_us` read.
    read: Arc<AtomicU64>,
}

impl std::fmt::Debug for JetstreamConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetstreamConnection").field("compressed", &self.decompressor.is_some()).finish()
    }
}

impl Connection for JetstreamConnection {
    fn arrived(&self) -> Option<std::time::Instant> {
        self.arrived
    }

    async fn read(&mut self, frames: &mut Vec<Frame>) -> Result<(), Failure> {
        let msg = match self.ws.next().await {
            None => return Err(Failure::Network("connection closed by the server".into())),
            Some(Err(e)) => return Err(Failure::Network(e.to_string())),
            Some(Ok(m)) => m,
        };
        self.arrived = Some(std::time::Instant::now());
        let bytes: Vec<u8> = match msg {
            WsMessage::Text(t) => t.as_bytes().to_vec(),
            WsMessage::Binary(b) => match self.decompressor.as_mut() {
                Some(d) => match d.decompress(&b, 4 << 20) {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::warn!(error = %e, "undecodable compressed frame skipped");
                        frames.push(Frame::KeepAlive);
                        return Ok(());
                    }
                },
                None => b.to_vec(),
            },
            WsMessage::Close(_) => return Err(Failure::Network("closed by the server".into())),
            // Ping, pong: the connection is alive.
            _ => {
                frames.push(Frame::KeepAlive);
                return Ok(());
            }
        };
        let checkpoint = time_us(&bytes);
        if let (Some((since, metrics)), Some(t)) = (&self.filling, checkpoint) {
            if t < *since {
                crate::telemetry::Metrics::add(&metrics.gap_filled_posts, 1);
            } else {
                self.filling = None;
            }
        }
        if let Some(t) = checkpoint {
            self.read.fetch_max(t, Ordering::Release);
        }
        frames.push(Frame::Record { dedup: event_key(&bytes), checkpoint, bytes });
        Ok(())
    }

    async fn close(&mut self) {
        let _ = self.ws.close(None).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_url_carries_filters_and_cursor() {
        let opts = JetstreamConnector {
            url: "ws://localhost:1/subscribe".into(),
            wanted_collections: vec!["app.bsky.feed.post".into()],
            wanted_dids: vec!["did:plc:a b".into()],
            compress: true,
            rewind: Duration::from_secs(5),
            cursor: CursorStore::None,
            confirmed: Arc::default(),
            persister: None,
            metrics: Arc::default(),
            read: Arc::default(),
        };
        assert_eq!(
            subscribe_url(&opts, Some(42)),
            "ws://localhost:1/subscribe?wantedCollections=app.bsky.feed.post&wantedDids=did:plc:a%20b&compress=true&cursor=42"
        );
    }

    #[test]
    fn the_dictionary_decompresses_what_it_compresses() {
        let data = br#"{"did":"did:plc:x","time_us":1,"kind":"commit"}"#;
        let mut c = zstd::bulk::Compressor::with_dictionary(3, DICTIONARY).expect("compressor");
        let z = c.compress(data).expect("compress");
        let mut d = zstd::bulk::Decompressor::with_dictionary(DICTIONARY).expect("decompressor");
        assert_eq!(d.decompress(&z, 1 << 20).expect("decompress"), data);
    }
}
