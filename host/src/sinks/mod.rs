//! Sinks: where enriched posts go.
//!
//! A closed list (STYLE 4, 15): every built-in sink is one line of
//! [`SinkConfig`]; its file holds its `XxxConfig` (keys, checks, path
//! resolution) and builds the running [`Sink`]. A sink receives processed
//! batches from the workers, restores source order ([`crate::batch::Reorder`]),
//! writes, and flushes when its input closes. `stdout` and `file` are blocking
//! writers that the workers drive themselves (see `handoff`); `kafka` runs on
//! the reactor.
//!
//! Dead letters (`on_error = "dead_letter"`) travel inside the batches and are
//! written by the sink, inline, to a [`LineSink`] made from the
//! `[dead_letter]` section.

pub mod file;
mod handoff;
pub mod kafka;
pub mod stdout;

pub use handoff::{BatchRx, BatchTx, SinkGone, channel};
pub(crate) use handoff::{Written, write_all_batches};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tokio_util::sync::CancellationToken;

use crate::batch::OutBatch;
use crate::component::{BaseDir, Problems, registry};
use crate::rules::Collector;
use crate::telemetry::Metrics;

registry! {
    /// `[sink]` (and `[dead_letter]`): where enriched posts go. `type` selects the sink.
    pub enum SinkConfig: dyn SinkComponent {
        /// JSON lines on standard output.
        Stdout = "stdout" (stdout::StdoutConfig),
        /// JSON lines in a file.
        File = "file" (file::FileSinkConfig),
        /// Kafka (librdkafka): lossless, with an on-disk spool.
        Kafka = "kafka" (kafka::KafkaSinkConfig),
    }
}

/// What every sink's configuration provides.
pub trait SinkComponent: std::fmt::Debug + Send + Sync {
    /// Pure checks of the values, run on every load; keys relative to the section.
    fn check(&self, problems: &mut Problems<'_>);
    /// Make relative paths (files, spool, secret files) absolute.
    fn resolve_paths(&mut self, _base: &BaseDir) {}
    /// Files (and directories) the sink writes, by key (no two components
    /// may share one).
    fn files(&self) -> Vec<(&'static str, &std::path::Path)> {
        Vec::new()
    }
    /// Build the running sink; `identity` names the collector (Kafka headers).
    /// Secrets are read here.
    fn build(&self, identity: Collector) -> Result<Sink, SinkError>;
}

/// Why a sink stopped.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot open output file {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The sink's settings are refused (by librdkafka, or a secret is missing).
    #[error("{what}: {reason}")]
    Config { what: String, reason: String },
    #[error("cannot write to {target}: {source}")]
    Write {
        target: String,
        #[source]
        source: std::io::Error,
    },
    /// A task of the sink failed (a bug, or the runtime going away).
    #[error("sink task failed: {0}")]
    Task(String),
}

impl SinkError {
    /// Errors a user can fix in the configuration.
    pub fn is_user_error(&self) -> bool {
        matches!(self, SinkError::Open { .. } | SinkError::Config { .. })
    }
}

/// How a sink ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkSummary {
    pub records: u64,
    pub bytes: u64,
}

/// What a running sink shares with the pipeline.
#[derive(Debug)]
pub struct SinkRun {
    pub metrics: Arc<Metrics>,
    /// Where dead letters go; `None` when no stage sends any.
    pub dead_letters: DeadLetters,
    /// Raised as batches are written (and flushed) in order: every batch
    /// whose `seq` is below it is written. The buffer turns this into the
    /// sources' checkpoints and removes written records from disk.
    pub confirmed: Arc<AtomicU64>,
    pub shutdown: CancellationToken,
}

/// What a running sink's future resolves to.
pub type SinkFuture = Pin<Box<dyn Future<Output = Result<SinkSummary, SinkError>> + Send>>;

/// A built sink.
pub trait RunSink: std::fmt::Debug + Send {
    /// A short name for logs.
    fn name(&self) -> String;
    /// Check what needs the environment (`validate`): the directory is
    /// writable, the client accepts its settings.
    fn check_environment(&self) -> Result<(), SinkError>;
    /// Write every batch until the channel closes, then flush.
    fn run(self: Box<Self>, input: BatchRx, run: SinkRun) -> SinkFuture;
    /// Open this sink as the destination of dead letters, written line by line.
    fn into_dead_letters(self: Box<Self>) -> Result<Box<dyn LineSink + Send>, SinkError>;
}

/// A built sink, ready to run.
#[derive(Debug)]
pub struct Sink(Box<dyn RunSink>);

impl Sink {
    pub fn new(inner: impl RunSink + 'static) -> Sink {
        Sink(Box::new(inner))
    }

    /// Build from configuration (paths already resolved).
    pub fn build(cfg: &SinkConfig, identity: Collector) -> Result<Sink, SinkError> {
        cfg.component().build(identity)
    }

    pub fn name(&self) -> String {
        self.0.name()
    }

    /// Check what needs the environment (the output directory is writable).
    pub fn check(&self) -> Result<(), SinkError> {
        self.0.check_environment()
    }

    /// Write every batch until the channel closes, then flush. Dead letters
    /// carried by the batches go to `dead_letter`.
    pub async fn run(
        self,
        input: BatchRx,
        metrics: Arc<Metrics>,
        dead_letter: Option<Sink>,
        confirmed: Arc<AtomicU64>,
        shutdown: CancellationToken,
    ) -> Result<SinkSummary, SinkError> {
        let dead_letters = DeadLetters(dead_letter.map(|d| d.0.into_dead_letters()).transpose()?);
        self.0.run(input, SinkRun { metrics, dead_letters, confirmed, shutdown }).await
    }
}

/// Something that takes one JSON line at a time.
pub trait LineSink {
    fn write_line(&mut self, line: &[u8]) -> Result<(), SinkError>;
    /// A batch's records, each followed by a newline ([`OutBatch::lines`]).
    /// A sink that writes bytes as they come overrides this to write the
    /// whole buffer at once (no copy through a line buffer).
    fn write_lines(&mut self, b: &OutBatch) -> Result<(), SinkError> {
        b.iter().try_for_each(|(line, _key)| self.write_line(line))
    }
    /// Called when no more batches are waiting (a good moment to flush).
    fn idle(&mut self) -> Result<(), SinkError>;
    /// The end: flush and make durable.
    fn finish(&mut self) -> Result<(), SinkError> {
        self.idle()
    }
}

/// The dead-letter destination, if there is one.
pub struct DeadLetters(Option<Box<dyn LineSink + Send>>);

impl DeadLetters {
    pub fn none() -> DeadLetters {
        DeadLetters(None)
    }
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "DeadLetters(open)" } else { "DeadLetters(none)" })
    }
}

impl LineSink for DeadLetters {
    fn write_line(&mut self, line: &[u8]) -> Result<(), SinkError> {
        match &mut self.0 {
            Some(w) => w.write_line(line),
            // Configuration checks make this unreachable: a dead-letter policy
            // needs a [dead_letter] section.
            None => {
                tracing::error!("dead letter with no [dead_letter] destination; record lost");
                Ok(())
            }
        }
    }
    fn idle(&mut self) -> Result<(), SinkError> {
        self.0.as_mut().map_or(Ok(()), |w| w.idle())
    }
    fn finish(&mut self) -> Result<(), SinkError> {
        self.0.as_mut().map_or(Ok(()), |w| w.finish())
    }
}

/// A `Write` with newline framing.
#[derive(Debug)]
pub struct LineWriter<W: std::io::Write> {
    w: W,
    target: &'static str,
}

impl<W: std::io::Write> LineWriter<W> {
    pub fn new(w: W, target: &'static str) -> Self {
        LineWriter { w, target }
    }
}

impl<W: std::io::Write> LineSink for LineWriter<W> {
    fn write_line(&mut self, line: &[u8]) -> Result<(), SinkError> {
        let err = |source| SinkError::Write { target: self.target.into(), source };
        self.w.write_all(line).map_err(err)?;
        self.w.write_all(b"\n").map_err(err)
    }
    fn write_lines(&mut self, b: &OutBatch) -> Result<(), SinkError> {
        self.w.write_all(b.lines()).map_err(|source| SinkError::Write { target: self.target.into(), source })
    }
    fn idle(&mut self) -> Result<(), SinkError> {
        self.w.flush().map_err(|source| SinkError::Write { target: self.target.into(), source })
    }
}

/// Run a blocking writer on tokio's blocking pool as a sink's future.
pub(crate) fn blocking<F>(f: F) -> SinkFuture
where
    F: FnOnce() -> Result<SinkSummary, SinkError> + Send + 'static,
{
    Box::pin(async move { tokio::task::spawn_blocking(f).await.map_err(|e| SinkError::Task(e.to_string()))? })
}
