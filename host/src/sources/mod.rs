//! Sources: where stream messages come from.
//!
//! A closed list (STYLE 4, 15): every built-in source is one line of
//! [`SourceConfig`]; its file holds its `XxxConfig` (keys, checks, path
//! resolution) and builds the running [`Source`]. A source reads, frames and
//! batches; it never decodes. It sends batches into a bounded channel and so
//! is slowed by backpressure. `run` returns when the input ends or `shutdown`
//! is cancelled; dropping the sender is what tells the workers that no more
//! input will come.
//!
//! Live connections (X, Twitter v1.1, Jetstream) are small
//! connectors run by one driver ([`live`]): batching, the stall deadline,
//! dedup, health and the reconnect policy are written once there.

pub mod backoff;
pub mod http;
pub mod jetstream;
pub mod kafka;
pub mod live;
mod live_config;
pub mod mastodon;
pub mod position;
pub mod replay;
pub mod synthetic;
pub mod v1_filter;
pub mod x_stream;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::batch::RawBatch;
use crate::component::{BaseDir, Problems, registry};
use crate::post::Format;
use crate::rules::RuleSnapshot;
use crate::telemetry::{Health, Metrics};

registry! {
    /// `[source]`: where posts come from. `type` selects the source.
    pub enum SourceConfig: dyn SourceComponent {
        /// Replay a JSON-lines file (`.gz` too), one message per line.
        Replay = "replay" (replay::ReplayConfig),
        /// Generate realistic v1.1-shaped posts.
        Synthetic = "synthetic" (synthetic::SyntheticConfig),
        /// X API v2 filtered stream, with rule sync.
        XFilteredStream = "x_filtered_stream" (x_stream::XStreamConfig),
        /// Twitter API v1.1 `statuses/filter` (and endpoints that speak it).
        TwitterV1Filter = "twitter_v1_filter" (v1_filter::V1FilterConfig),
        /// A Kafka consumer group (enrichment workers; at-least-once).
        Kafka = "kafka" (kafka::KafkaSourceConfig),
        /// Bluesky Jetstream over WebSocket.
        Jetstream = "jetstream" (jetstream::JetstreamConfig),
        /// A Mastodon server's streaming API (server-sent events).
        Mastodon = "mastodon" (mastodon::MastodonConfig),
    }
}

/// What every source's configuration provides.
pub trait SourceComponent: std::fmt::Debug + Send + Sync {
    /// Pure checks of the values, run on every load; keys relative to `[source]`.
    fn check(&self, problems: &mut Problems<'_>);
    /// Make relative paths (files, secret files) absolute.
    fn resolve_paths(&mut self, _base: &BaseDir) {}
    /// The wire format of the messages this source emits.
    fn format(&self) -> Format;
    /// Holds a connection to a streaming API (readiness waits for it).
    fn live(&self) -> bool {
        false
    }
    /// Files the source reads or writes, by key (no two components may share one).
    fn files(&self) -> Vec<(&'static str, &std::path::Path)> {
        Vec::new()
    }
    /// Build the running source. Secrets are read here: a missing one is a
    /// configuration error naming its key.
    fn build(&self, cx: &SourceContext) -> Result<Source, SourceError>;
}

/// Sender side of the source → workers channel.
pub type BatchTx = async_channel::Sender<RawBatch>;

/// Why a source stopped early.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("error reading {path} after line {line}: {source}")]
    Read {
        path: String,
        line: u64,
        #[source]
        source: std::io::Error,
    },
    /// A task of the source failed (a bug, or the runtime going away).
    #[error("source task failed: {0}")]
    Task(String),
    /// The settings cannot work (a missing secret, a refused client setting).
    #[error("source configuration: {0}")]
    Config(String),
    #[error("credentials refused: {0}")]
    Unauthorized(String),
}

impl SourceError {
    /// Errors a user can fix in the configuration (a wrong path, a missing secret).
    pub fn is_user_error(&self) -> bool {
        matches!(self, SourceError::Open { .. } | SourceError::Config(_))
    }
}

/// How a source ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceSummary {
    pub records: u64,
    pub bytes: u64,
}

/// Batching settings handed to every source.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    pub max_records: usize,
    pub max_wait: Duration,
}

/// What a source may need from the rest of the collector.
#[derive(Debug, Clone)]
pub struct SourceContext {
    pub batching: Batching,
    /// The current rules (sources that sync rules with an API watch them).
    pub rules: tokio::sync::watch::Receiver<Arc<RuleSnapshot>>,
    /// Marked unhealthy when the source cannot collect (heartbeat withheld).
    pub health: Arc<Health>,
    /// The highest batch checkpoint the sink has written.
    pub confirmed: Arc<AtomicU64>,
    /// The coordination server, if any (cursors kept in Redis).
    pub redis: Option<redis::aio::ConnectionManager>,
    /// Pipeline counters (dropped duplicates are counted here).
    pub metrics: Arc<Metrics>,
    /// A longer record is skipped (counted as malformed) without being held whole.
    pub max_record_bytes: usize,
    /// Server-side rule ids of the local rules (X v2), for the workers.
    pub remote_rule_ids: Arc<crate::rules::RemoteRuleIds>,
    /// The API-key pool, when `[coordination.api_keys]` hands out the
    /// credentials (pipeline credentials are then the fallback).
    pub key_pool: Option<crate::key_pool::KeyPoolHandle>,
    /// The pool key this source connects with (set by the source).
    pub key_in_use: Arc<crate::key_pool::KeyInUse>,
    /// Connection counters of a live source (the admin endpoint reads them).
    pub connection_stats: Arc<crate::telemetry::ConnectionStats>,
    /// Whether a worker waits for a batch (live sources hand over at once
    /// then, and let a batch grow a moment otherwise).
    pub demand: Arc<crate::batch::Demand>,
    /// `id = "auto"`: the lease holding the collector's id.
    pub lease: Option<crate::coordination::lease::Lease>,
    /// Where this source keeps its confirmed position when its own settings
    /// name no place (set per source by the topology).
    pub position: position::CursorStore,
}

impl SourceContext {
    /// A context with no rules and tiny batches (validation, tools, tests).
    pub fn detached() -> SourceContext {
        let (_tx, rules) = tokio::sync::watch::channel(Arc::new(RuleSnapshot::default()));
        SourceContext {
            batching: Batching { max_records: 1, max_wait: Duration::from_millis(1) },
            rules,
            health: Arc::default(),
            confirmed: Arc::default(),
            redis: None,
            metrics: Arc::default(),
            max_record_bytes: crate::batch::DEFAULT_MAX_RECORD_BYTES,
            remote_rule_ids: Arc::default(),
            key_pool: None,
            key_in_use: Arc::default(),
            connection_stats: Arc::default(),
            demand: Arc::default(),
            lease: None,
            position: position::CursorStore::None,
        }
    }
}

/// What a running source's future resolves to.
pub type SourceFuture = Pin<Box<dyn Future<Output = Result<SourceSummary, SourceError>> + Send>>;

/// A built source, ready to run.
pub trait RunSource: std::fmt::Debug + Send {
    /// A short name for logs and error reports.
    fn name(&self) -> String;
    /// Check what needs the environment (`validate`): a file exists and is readable.
    fn check_environment(&self) -> Result<(), SourceError> {
        Ok(())
    }
    /// Read until the input ends or `shutdown` is cancelled.
    fn run(self: Box<Self>, out: BatchTx, shutdown: CancellationToken) -> SourceFuture;
}

/// A built source and the format of what it emits.
#[derive(Debug)]
pub struct Source {
    inner: Box<dyn RunSource>,
    format: Format,
}

impl Source {
    pub fn new(inner: impl RunSource + 'static, format: Format) -> Source {
        Source { inner: Box::new(inner), format }
    }

    /// Build from configuration (paths already resolved).
    pub fn build(cfg: &SourceConfig, cx: &SourceContext) -> Result<Source, SourceError> {
        cfg.component().build(cx)
    }

    /// The wire format of what this source emits.
    pub fn format(&self) -> Format {
        self.format
    }

    /// A short name for logs and error reports.
    pub fn name(&self) -> String {
        self.inner.name()
    }

    /// Check what needs the environment (the file exists and is readable).
    pub fn check(&self) -> Result<(), SourceError> {
        self.inner.check_environment()
    }

    pub async fn run(self, out: BatchTx, shutdown: CancellationToken) -> Result<SourceSummary, SourceError> {
        self.inner.run(out, shutdown).await
    }
}

/// Run a blocking reader on tokio's blocking pool as a source's future.
pub(crate) fn blocking<F>(f: F) -> SourceFuture
where
    F: FnOnce() -> Result<SourceSummary, SourceError> + Send + 'static,
{
    Box::pin(async move { tokio::task::spawn_blocking(f).await.map_err(|e| SourceError::Task(e.to_string()))? })
}

/// Paces a blocking producer to `rate` records per second (0 = no pacing).
#[derive(Debug)]
pub(crate) struct Pacer {
    rate: f64,
    start: std::time::Instant,
    sent: u64,
}

impl Pacer {
    pub(crate) fn new(rate: f64) -> Pacer {
        Pacer { rate, start: std::time::Instant::now(), sent: 0 }
    }

    /// How long to wait before the next record may go.
    pub(crate) fn wait(&mut self) -> Option<Duration> {
        if self.rate <= 0.0 {
            return None;
        }
        let due = self.start + Duration::from_secs_f64(self.sent as f64 / self.rate);
        self.sent += 1;
        due.checked_duration_since(std::time::Instant::now())
    }
}

/// Sleep up to `d`, waking early on shutdown. Returns false if shut down.
pub(crate) fn sleep_unless_cancelled(d: Duration, shutdown: &CancellationToken) -> bool {
    let end = std::time::Instant::now() + d;
    loop {
        if shutdown.is_cancelled() {
            return false;
        }
        let left = end.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}
