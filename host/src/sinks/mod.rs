//! Sinks: where enriched posts go.
//!
//! A closed enum (STYLE 4). A sink receives processed batches from the workers,
//! restores source order ([`Reorder`]), writes, and flushes when its input
//! closes. `stdout` and `file` are blocking writers on their own thread.

pub mod file;
pub mod kafka;
pub mod spool;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::SinkConfig;
use crate::pipeline::{OutBatch, Reorder};
use crate::telemetry::Metrics;

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
    #[error("sink task failed: {0}")]
    Task(String),
}

/// How a sink ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkSummary {
    pub records: u64,
    pub bytes: u64,
    /// Standard output was closed by the reader (e.g. `| head`); the run stopped.
    pub closed_by_reader: bool,
}

/// A built sink.
#[derive(Debug)]
pub enum Sink {
    Stdout,
    File(file::FileSink),
    Kafka(Box<kafka::KafkaOptions>),
}

impl Sink {
    /// Build from configuration; `identity` names the collector in Kafka headers.
    pub fn build(cfg: &SinkConfig, identity: crate::envelope::Identity) -> Result<Sink, SinkError> {
        Ok(match cfg {
            SinkConfig::Stdout {} => Sink::Stdout,
            SinkConfig::File { path, rotate_bytes } => Sink::File(file::FileSink::new(path.clone(), *rotate_bytes)),
            SinkConfig::Kafka {
                brokers,
                topic,
                compression,
                max_inflight_bytes,
                delivery_timeout_ms,
                drain_timeout_secs,
                spill_after_ms,
                properties,
                secret_properties,
                spool,
            } => {
                let mut props: Vec<(String, String)> = properties.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                for (k, s) in secret_properties {
                    let v = s.resolve().map_err(|e| SinkError::Config {
                        what: format!("sink.secret_properties.{k}"),
                        reason: e.to_string(),
                    })?;
                    props.push((k.clone(), v.expose().to_owned()));
                }
                Sink::Kafka(Box::new(kafka::KafkaOptions {
                    brokers: brokers.clone(),
                    topic: topic.clone(),
                    compression: compression.clone(),
                    max_inflight_bytes: *max_inflight_bytes,
                    delivery_timeout: std::time::Duration::from_millis(*delivery_timeout_ms),
                    drain_timeout: std::time::Duration::from_secs(*drain_timeout_secs),
                    spill_after: std::time::Duration::from_millis(*spill_after_ms),
                    properties: props,
                    spool: spool.as_ref().map(|s| kafka::SpoolOptions {
                        dir: s.dir.clone(),
                        max_bytes: s.max_bytes,
                        segment_bytes: s.segment_bytes,
                        fsync: s.fsync,
                        overflow: s.overflow,
                    }),
                    traptor_type: identity.traptor_type.as_str().to_owned(),
                    traptor_id: identity.traptor_id,
                }))
            }
        })
    }

    pub fn name(&self) -> String {
        match self {
            Sink::Stdout => "stdout".into(),
            Sink::File(f) => f.path().display().to_string(),
            Sink::Kafka(k) => format!("kafka {} topic {}", k.brokers, k.topic),
        }
    }

    /// Check what needs the environment (the output directory is writable).
    pub fn check(&self) -> Result<(), SinkError> {
        match self {
            Sink::Stdout => Ok(()),
            Sink::File(f) => f.check(),
            Sink::Kafka(k) => kafka::producer(k, Default::default()).map(drop),
        }
    }

    /// Write every batch until the channel closes, then flush. Dead letters
    /// carried by the batches go to `dead_letter`.
    pub async fn run(
        self,
        input: BatchRx,
        metrics: Arc<Metrics>,
        dead_letter: Option<Sink>,
        confirmed: Arc<AtomicU64>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<SinkSummary, SinkError> {
        if let Sink::Kafka(o) = self {
            let dead = match dead_letter {
                Some(Sink::File(mut f)) => {
                    f.open()?;
                    Some(f)
                }
                _ => None,
            };
            let stats = Arc::new(kafka::KafkaStats::default());
            let r = kafka::run(*o, input, metrics, confirmed, stats.clone(), dead, shutdown).await;
            tracing::info!(
                delivered = stats.delivered.load(Ordering::Relaxed),
                spooled = stats.spooled.load(Ordering::Relaxed),
                replayed = stats.replayed.load(Ordering::Relaxed),
                dropped_spool_full = stats.spool_overflow_dropped.load(Ordering::Relaxed),
                lost = stats.lost.load(Ordering::Relaxed),
                "kafka sink finished"
            );
            return r;
        }
        tokio::task::spawn_blocking(move || {
            let mut dead = match dead_letter {
                None | Some(Sink::Kafka(_)) => DeadWriter::None,
                Some(Sink::Stdout) => DeadWriter::Stdout(std::io::BufWriter::new(std::io::stdout())),
                Some(Sink::File(mut f)) => {
                    f.open()?;
                    DeadWriter::File(f)
                }
            };
            let result = match self {
                Sink::Kafka(_) => Ok(SinkSummary::default()),
                Sink::Stdout => {
                    let mut w = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout());
                    let r = write_all_batches(
                        &input,
                        &metrics,
                        &mut LineWriter::plain(&mut w, "stdout"),
                        &mut dead,
                        &confirmed,
                    );
                    match r {
                        Err(SinkError::Write { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
                            input.close();
                            Ok(SinkSummary { closed_by_reader: true, ..SinkSummary::default() })
                        }
                        other => other,
                    }
                }
                Sink::File(mut f) => {
                    let r = f.open().and_then(|()| write_all_batches(&input, &metrics, &mut f, &mut dead, &confirmed));
                    f.finish().and(r)
                }
            };
            dead.finish().and(result)
        })
        .await
        .map_err(|e| SinkError::Task(e.to_string()))?
    }
}

/// Where dead letters are written, if anywhere.
enum DeadWriter {
    None,
    Stdout(std::io::BufWriter<std::io::Stdout>),
    File(file::FileSink),
}

impl DeadWriter {
    fn finish(&mut self) -> Result<(), SinkError> {
        match self {
            DeadWriter::None => Ok(()),
            DeadWriter::Stdout(w) => LineWriter::plain(w, "stdout").idle(),
            DeadWriter::File(f) => f.finish(),
        }
    }
}

impl LineSink for DeadWriter {
    fn write_line(&mut self, line: &[u8]) -> Result<(), SinkError> {
        match self {
            // Configuration checks make this unreachable: a dead-letter policy
            // needs a [dead_letter] section.
            DeadWriter::None => {
                tracing::error!("dead letter with no [dead_letter] destination; record lost");
                Ok(())
            }
            DeadWriter::Stdout(w) => LineWriter::plain(w, "stdout").write_line(line),
            DeadWriter::File(f) => f.write_line(line),
        }
    }
    fn idle(&mut self) -> Result<(), SinkError> {
        match self {
            DeadWriter::None => Ok(()),
            DeadWriter::Stdout(w) => LineWriter::plain(w, "stdout").idle(),
            DeadWriter::File(f) => f.idle(),
        }
    }
}

/// Something that takes one JSON line at a time.
pub trait LineSink {
    fn write_line(&mut self, line: &[u8]) -> Result<(), SinkError>;
    /// Called when no more batches are waiting (a good moment to flush).
    fn idle(&mut self) -> Result<(), SinkError>;
}

/// A `Write` with newline framing.
#[derive(Debug)]
pub struct LineWriter<'w, W: Write> {
    w: &'w mut W,
    target: &'static str,
}

impl<'w, W: Write> LineWriter<'w, W> {
    pub fn plain(w: &'w mut W, target: &'static str) -> Self {
        LineWriter { w, target }
    }
}

impl<W: Write> LineSink for LineWriter<'_, W> {
    fn write_line(&mut self, line: &[u8]) -> Result<(), SinkError> {
        let err = |source| SinkError::Write { target: self.target.into(), source };
        self.w.write_all(line).map_err(err)?;
        self.w.write_all(b"\n").map_err(err)
    }
    fn idle(&mut self) -> Result<(), SinkError> {
        self.w.flush().map_err(|source| SinkError::Write { target: self.target.into(), source })
    }
}

/// The shared receive → reorder → write loop of the blocking sinks.
fn write_all_batches(
    input: &BatchRx,
    metrics: &Metrics,
    out: &mut dyn LineSink,
    dead: &mut dyn LineSink,
    confirmed: &AtomicU64,
) -> Result<SinkSummary, SinkError> {
    let mut reorder = Reorder::default();
    let mut summary = SinkSummary::default();
    // Highest source checkpoint written; published once flushed.
    let mut written: u64 = 0;
    let write = |out: &mut dyn LineSink,
                 dead: &mut dyn LineSink,
                 b: OutBatch,
                 summary: &mut SinkSummary|
     -> Result<(), SinkError> {
        for (line, _key) in b.iter() {
            out.write_line(line)?;
        }
        for line in b.iter_dead() {
            dead.write_line(line)?;
        }
        Metrics::add(&metrics.dead_letters_out, b.dead_len() as u64);
        summary.records += b.len() as u64;
        summary.bytes += b.bytes() as u64 + b.len() as u64;
        Metrics::add(&metrics.records_out, b.len() as u64);
        Metrics::add(&metrics.bytes_out, b.bytes() as u64 + b.len() as u64);
        Ok(())
    };
    while let Ok(batch) = input.recv_blocking() {
        for b in reorder.push(batch) {
            written = written.max(b.checkpoint.unwrap_or(0));
            write(out, dead, b, &mut summary)?;
        }
        if input.is_empty() {
            out.idle()?;
            dead.idle()?;
            confirmed.fetch_max(written, Ordering::Release);
        }
    }
    for b in reorder.drain() {
        written = written.max(b.checkpoint.unwrap_or(0));
        write(out, dead, b, &mut summary)?;
    }
    out.idle()?;
    dead.idle()?;
    confirmed.fetch_max(written, Ordering::Release);
    Ok(summary)
}
