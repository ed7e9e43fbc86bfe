//! Sinks: where enriched posts go.
//!
//! A closed list (STYLE 4, 15): every built-in sink is one line of
//! [`SinkConfig`]; its file holds its `XxxConfig` (keys, checks, path
//! resolution) and builds the running [`Sink`]. A sink receives processed
//! batches from the workers, restores source order ([`Reorder`]), writes, and
//! flushes when its input closes. `stdout` and `file` are blocking writers on
//! their own thread; `kafka` runs on the reactor.
//!
//! Dead letters (`on_error = "dead_letter"`) travel inside the batches and are
//! written by the sink, inline, to a [`LineSink`] made from the
//! `[dead_letter]` section.

pub mod file;
pub mod kafka;
pub mod stdout;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;

use crate::batch::{OutBatch, Reorder};
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

/// Receiver side of the workers → sink channel.
pub type BatchRx = async_channel::Receiver<OutBatch>;

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

/// How long written lines may wait in a sink's buffer while more batches
/// are queued behind them: past it they are flushed even so (latency), below
/// it more batches join the same write (throughput).
const FLUSH_AFTER: std::time::Duration = std::time::Duration::from_micros(500);

/// The shared receive → reorder → write loop of the blocking sinks.
///
/// Lines are flushed when no batch is waiting, or when the oldest unflushed
/// one was written [`FLUSH_AFTER`] ago; the end-to-end latency of a batch is
/// observed when it is flushed (when a reader can see it), not when it
/// entered the buffer.
pub(crate) fn write_all_batches(
    input: &BatchRx,
    metrics: &Metrics,
    out: &mut dyn LineSink,
    dead: &mut dyn LineSink,
    confirmed: &AtomicU64,
) -> Result<SinkSummary, SinkError> {
    let mut reorder = Reorder::default();
    let mut summary = SinkSummary::default();
    // Batches below this sequence number are written; published once flushed.
    let mut written: u64 = 0;
    // (read at, records) of the batches written since the last flush.
    let mut unflushed: Vec<(Option<std::time::Instant>, u64)> = Vec::new();
    let mut unflushed_since: Option<std::time::Instant> = None;
    let write = |out: &mut dyn LineSink,
                 dead: &mut dyn LineSink,
                 b: OutBatch,
                 summary: &mut SinkSummary,
                 unflushed: &mut Vec<(Option<std::time::Instant>, u64)>|
     -> Result<(), SinkError> {
        out.write_lines(&b)?;
        for line in b.iter_dead() {
            dead.write_line(line)?;
        }
        Metrics::add(&metrics.dead_letters_out, b.dead_len() as u64);
        summary.records += b.len() as u64;
        summary.bytes += b.bytes() as u64 + b.len() as u64;
        Metrics::add(&metrics.records_out, b.len() as u64);
        Metrics::add(&metrics.bytes_out, b.bytes() as u64 + b.len() as u64);
        unflushed.push((b.read_at, b.len() as u64));
        Ok(())
    };
    let flush = |out: &mut dyn LineSink,
                 dead: &mut dyn LineSink,
                 unflushed: &mut Vec<(Option<std::time::Instant>, u64)>,
                 written: u64|
     -> Result<(), SinkError> {
        out.idle()?;
        dead.idle()?;
        let now = std::time::Instant::now();
        for (read_at, n) in unflushed.drain(..) {
            if let Some(t) = read_at {
                metrics.end_to_end.observe_n(now.saturating_duration_since(t), n);
            }
        }
        confirmed.fetch_max(written, Ordering::Release);
        Ok(())
    };
    while let Ok(batch) = input.recv_blocking() {
        for b in reorder.push(batch) {
            written = written.max(b.seq + 1);
            write(out, dead, b, &mut summary, &mut unflushed)?;
            unflushed_since.get_or_insert_with(std::time::Instant::now);
        }
        if input.is_empty() || unflushed_since.is_some_and(|t| t.elapsed() >= FLUSH_AFTER) {
            flush(out, dead, &mut unflushed, written)?;
            unflushed_since = None;
        }
    }
    for b in reorder.drain() {
        written = written.max(b.seq + 1);
        write(out, dead, b, &mut summary, &mut unflushed)?;
    }
    flush(out, dead, &mut unflushed, written)?;
    Ok(summary)
}
