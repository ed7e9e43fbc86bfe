//! Sources: where stream messages come from.
//!
//! A closed enum (STYLE 4): every built-in source is listed in [`Source`] and
//! built by one `match`. A source reads, frames and batches; it never decodes.
//! It sends batches into a bounded channel and so is slowed by backpressure.
//! `run` returns when the input ends or `shutdown` is cancelled; dropping the
//! sender is what tells the workers that no more input will come.

pub mod backoff;
pub mod jetstream;
pub mod kafka;
pub mod replay;
pub mod synthetic;
pub mod v1_filter;
pub mod x_stream;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::SourceConfig;
use crate::pipeline::RawBatch;

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
    #[error("source task failed: {0}")]
    Task(String),
    #[error("source configuration: {0}")]
    Config(String),
    #[error("credentials refused: {0}")]
    Unauthorized(String),
}

impl SourceError {
    /// Errors a user can fix (a wrong path) versus everything else.
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
    /// The current rules (sources that sync rules with an API watch them).
    pub rules: tokio::sync::watch::Receiver<std::sync::Arc<crate::rules::RuleSnapshot>>,
    /// Marked unhealthy when the source cannot collect (heartbeat withheld).
    pub health: std::sync::Arc<crate::coordination::Health>,
    /// The highest batch checkpoint the sink has written.
    pub confirmed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The coordination server, if any (cursors kept in Redis).
    pub redis: Option<redis::aio::ConnectionManager>,
}

impl SourceContext {
    /// A context with no rules (validation, tools).
    pub fn detached() -> SourceContext {
        let (_tx, rules) = tokio::sync::watch::channel(std::sync::Arc::new(crate::rules::RuleSnapshot::default()));
        SourceContext { rules, health: std::sync::Arc::default(), confirmed: std::sync::Arc::default(), redis: None }
    }
}

/// A built source, ready to run.
#[derive(Debug)]
pub enum Source {
    Replay(replay::Replay),
    Synthetic(synthetic_source::Synthetic),
    XFilteredStream(Box<x_stream::XStream>),
    Jetstream(Box<jetstream::Jetstream>),
    TwitterV1Filter(Box<v1_filter::V1Filter>),
    Kafka(Box<kafka::KafkaSource>),
}

impl Source {
    /// Build from configuration (paths already resolved). Secrets are read
    /// here; a missing one is a configuration error naming where it was sought.
    pub fn build(cfg: &SourceConfig, batching: Batching, ctx: &SourceContext) -> Result<Source, SourceError> {
        Ok(match cfg {
            SourceConfig::Replay { path, rate, follow, format } => {
                Source::Replay(replay::Replay::new(path.clone(), *rate, *follow, batching, *format))
            }
            SourceConfig::Synthetic { count, rate, seed } => {
                Source::Synthetic(synthetic_source::Synthetic { count: *count, rate: *rate, seed: *seed, batching })
            }
            SourceConfig::XFilteredStream {
                base_url,
                bearer_token,
                stall_timeout_secs,
                sync_rules,
                max_rules,
                max_rule_length,
                dedup_window,
                backoff_scale,
            } => {
                let token =
                    bearer_token.resolve().map_err(|e| SourceError::Config(format!("source.bearer_token: {e}")))?;
                Source::XFilteredStream(Box::new(x_stream::XStream {
                    opts: x_stream::XStreamOptions {
                        base_url: base_url.clone(),
                        token,
                        stall_timeout: Duration::from_secs(*stall_timeout_secs),
                        sync_rules: *sync_rules,
                        max_rules: *max_rules,
                        max_rule_length: *max_rule_length,
                        dedup_window: *dedup_window,
                    },
                    batching,
                    rules: ctx.rules.clone(),
                    health: ctx.health.clone(),
                    stats: std::sync::Arc::default(),
                    backoff_scale: *backoff_scale,
                }))
            }
            SourceConfig::TwitterV1Filter {
                base_url,
                consumer_key,
                consumer_secret,
                access_token,
                access_token_secret,
                stall_timeout_secs,
                delimited,
                min_rule_reconnect_secs,
                backoff_scale,
            } => {
                let read = |name: &str, s: &crate::config::SecretRef| {
                    s.resolve().map_err(|e| SourceError::Config(format!("source.{name}: {e}")))
                };
                let keys = v1_filter::OAuthKeys {
                    consumer_key: read("consumer_key", consumer_key)?,
                    consumer_secret: read("consumer_secret", consumer_secret)?,
                    access_token: read("access_token", access_token)?,
                    access_token_secret: read("access_token_secret", access_token_secret)?,
                };
                Source::TwitterV1Filter(Box::new(v1_filter::V1Filter {
                    opts: v1_filter::V1Options {
                        base_url: base_url.clone(),
                        keys,
                        stall_timeout: Duration::from_secs(*stall_timeout_secs),
                        delimited: *delimited,
                        min_rule_reconnect: Duration::from_secs(*min_rule_reconnect_secs),
                    },
                    batching,
                    rules: ctx.rules.clone(),
                    health: ctx.health.clone(),
                    stats: std::sync::Arc::default(),
                    backoff_scale: *backoff_scale,
                }))
            }
            SourceConfig::Kafka { brokers, topics, group_id, format, properties, secret_properties } => {
                let mut props: Vec<(String, String)> = properties.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                for (k, s) in secret_properties {
                    let v =
                        s.resolve().map_err(|e| SourceError::Config(format!("source.secret_properties.{k}: {e}")))?;
                    props.push((k.clone(), v.expose().to_owned()));
                }
                Source::Kafka(Box::new(kafka::KafkaSource {
                    opts: kafka::KafkaSourceOptions {
                        brokers: brokers.clone(),
                        topics: topics.clone(),
                        group_id: group_id.clone(),
                        properties: props,
                    },
                    format: *format,
                    batching,
                    confirmed: ctx.confirmed.clone(),
                }))
            }
            SourceConfig::Jetstream {
                url,
                wanted_collections,
                wanted_dids,
                compress,
                cursor_path,
                cursor_redis_key,
                cursor_rewind_secs,
                stall_timeout_secs,
                backoff_scale,
            } => {
                let cursor = match (cursor_path, cursor_redis_key, &ctx.redis) {
                    (Some(p), _, _) => jetstream::CursorStore::File(p.clone()),
                    (None, Some(k), Some(conn)) => jetstream::CursorStore::Redis { conn: conn.clone(), key: k.clone() },
                    (None, Some(_), None) => {
                        return Err(SourceError::Config(
                            "source.cursor_redis_key needs a Redis server ([coordination] or redis rules)".into(),
                        ));
                    }
                    (None, None, _) => jetstream::CursorStore::None,
                };
                Source::Jetstream(Box::new(jetstream::Jetstream {
                    opts: jetstream::JetstreamOptions {
                        url: url.clone(),
                        wanted_collections: wanted_collections.clone(),
                        wanted_dids: wanted_dids.clone(),
                        compress: *compress,
                        rewind: Duration::from_secs(*cursor_rewind_secs),
                        stall_timeout: Duration::from_secs(*stall_timeout_secs),
                    },
                    cursor,
                    batching,
                    confirmed: ctx.confirmed.clone(),
                    stats: std::sync::Arc::default(),
                    backoff_scale: *backoff_scale,
                }))
            }
        })
    }

    /// The wire format of what this source emits.
    pub fn format(&self) -> crate::post::Format {
        match self {
            Source::Replay(r) => r.format(),
            Source::Synthetic(_) => crate::post::Format::TwitterV1,
            Source::XFilteredStream(_) => crate::post::Format::XV2,
            Source::Jetstream(_) => crate::post::Format::Jetstream,
            Source::TwitterV1Filter(_) => crate::post::Format::TwitterV1,
            Source::Kafka(k) => k.format,
        }
    }

    /// A short name for logs and error reports.
    pub fn name(&self) -> String {
        match self {
            Source::Replay(r) => r.path.display().to_string(),
            Source::Synthetic(_) => "synthetic".into(),
            Source::XFilteredStream(x) => format!("x_filtered_stream {}", x.opts.base_url),
            Source::Jetstream(j) => format!("jetstream {}", j.opts.url),
            Source::TwitterV1Filter(v) => format!("twitter_v1_filter {}", v.opts.base_url),
            Source::Kafka(k) => format!("kafka {} {:?} group {}", k.opts.brokers, k.opts.topics, k.opts.group_id),
        }
    }

    /// Check what needs the environment (the file exists and is readable).
    pub fn check(&self) -> Result<(), SourceError> {
        match self {
            Source::Replay(r) => r.check(),
            Source::Synthetic(_)
            | Source::XFilteredStream(_)
            | Source::Jetstream(_)
            | Source::TwitterV1Filter(_)
            | Source::Kafka(_) => Ok(()),
        }
    }

    pub async fn run(self, out: BatchTx, shutdown: CancellationToken) -> Result<SourceSummary, SourceError> {
        let task = match self {
            Source::Replay(r) => tokio::task::spawn_blocking(move || r.run_blocking(&out, &shutdown)),
            Source::Synthetic(s) => tokio::task::spawn_blocking(move || s.run_blocking(&out, &shutdown)),
            Source::XFilteredStream(x) => return x.run(out, shutdown).await,
            Source::Jetstream(j) => return j.run(out, shutdown).await,
            Source::TwitterV1Filter(v) => return v.run(out, shutdown).await,
            Source::Kafka(k) => return k.run(out, shutdown).await,
        };
        task.await.map_err(|e| SourceError::Task(e.to_string()))?
    }
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

mod synthetic_source {
    use super::*;
    use crate::pipeline::Batcher;

    /// The running `synthetic` source.
    #[derive(Debug)]
    pub struct Synthetic {
        pub count: Option<u64>,
        pub rate: f64,
        pub seed: u64,
        pub batching: Batching,
    }

    impl Synthetic {
        pub(super) fn run_blocking(
            self,
            out: &BatchTx,
            shutdown: &CancellationToken,
        ) -> Result<SourceSummary, SourceError> {
            let mut generator = synthetic::Generator::new(self.seed);
            let mut batcher = Batcher::new(self.batching.max_records);
            let mut pacer = Pacer::new(self.rate);
            let mut summary = SourceSummary::default();
            let mut last_flush = std::time::Instant::now();
            while self.count.is_none_or(|c| summary.records < c) && !shutdown.is_cancelled() {
                if let Some(wait) = pacer.wait() {
                    // Paced: don't hold records back while waiting.
                    if last_flush.elapsed() >= self.batching.max_wait || wait >= self.batching.max_wait {
                        if let Some(b) = batcher.flush()
                            && out.send_blocking(b).is_err()
                        {
                            return Ok(summary);
                        }
                        last_flush = std::time::Instant::now();
                    }
                    if !sleep_unless_cancelled(wait, shutdown) {
                        break;
                    }
                }
                let post = generator.next_post();
                summary.records += 1;
                summary.bytes += post.len() as u64;
                if let Some(b) = batcher.push(&post, summary.records) {
                    last_flush = std::time::Instant::now();
                    if out.send_blocking(b).is_err() {
                        return Ok(summary);
                    }
                }
            }
            if let Some(b) = batcher.flush() {
                let _ = out.send_blocking(b);
            }
            Ok(summary)
        }
    }
}
