//! The in-process pipeline: batches, bounded channels, CPU workers, ordering.
//!
//! ```text
//! source ──RawBatch──▶ [bounded] ──▶ worker × N ──OutBatch──▶ [bounded] ──▶ sink
//!                                      │ decode, classify, match, envelope
//!                                      └ reads the current Arc<Compiled> per batch
//! ```
//!
//! * Batches, not records, cross channels; a batch is one buffer plus record
//!   boundaries, so a record costs no allocation of its own.
//! * Both channels are bounded: a slow sink stops the workers, which stop the
//!   source (backpressure, never unbounded memory).
//! * Workers are OS threads (CPU work never runs on the async reactor).
//! * Every batch carries a sequence number and the sink restores source order,
//!   so output order equals input order whatever the number of workers.
//! * Shutdown: the source stops and drops its sender; workers drain what is
//!   queued and exit; the sink writes everything it received, flushes, returns.

pub mod buffer;
mod context;
pub mod dedup;
mod disk_queue;
#[cfg(test)]
mod drift;
pub mod limits;
pub mod provenance;
pub mod recent;
pub mod worker;

use std::path::PathBuf;

use serde::Deserialize;

pub use context::{Compiled, Fatal, SourceInfo, StageSet, WorkerContext};
pub use worker::{FatalStageError, WorkerScratch, process_batch, spawn_workers};

use crate::component::{BaseDir, Problems};

/// `[pipeline]`: batching, parallelism and buffering.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineTuning {
    /// CPU workers (decode, match, stages, envelope); default: one per core.
    #[serde(default)]
    pub workers: Option<usize>,
    /// Records per batch.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// A partial batch is sent after this long (slow sources).
    #[serde(default = "default_batch_timeout_ms")]
    pub batch_timeout_ms: u64,
    /// Batches that may wait in each channel.
    #[serde(default = "default_channel_batches")]
    pub channel_batches: usize,
    /// Where compiled plugins are cached (default `~/.cache/traptor/wasm`,
    /// or `$TRAPTOR_CACHE_DIR/wasm`).
    #[serde(default)]
    pub plugin_cache_dir: Option<PathBuf>,
    /// A longer record (a line, a frame) is counted as malformed and skipped
    /// without being held whole.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
}

/// The most workers on any machine (tokio's blocking pool holds 512 threads).
pub const MAX_WORKERS: usize = 256;

/// Workers allowed here: 4 per core, at most [`MAX_WORKERS`].
pub fn max_workers() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    cores.saturating_mul(4).min(MAX_WORKERS)
}

fn default_max_record_bytes() -> usize {
    crate::batch::DEFAULT_MAX_RECORD_BYTES
}

fn default_batch_size() -> usize {
    256
}
fn default_batch_timeout_ms() -> u64 {
    50
}
fn default_channel_batches() -> usize {
    8
}

impl Default for PipelineTuning {
    fn default() -> Self {
        PipelineTuning {
            workers: None,
            batch_size: default_batch_size(),
            batch_timeout_ms: default_batch_timeout_ms(),
            channel_batches: default_channel_batches(),
            plugin_cache_dir: None,
            max_record_bytes: crate::batch::DEFAULT_MAX_RECORD_BYTES,
        }
    }
}

impl PipelineTuning {
    /// Workers to start: the setting, or one per core.
    pub fn workers(&self) -> usize {
        self.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
    }

    /// Pure checks; keys relative to `[pipeline]`. Workers run on threads
    /// of tokio's blocking pool (512 at most, shared with the file source and
    /// sinks), so their number is bounded by the machine: 4 per core, at most
    /// [`MAX_WORKERS`].
    pub fn check(&self, p: &mut Problems<'_>) {
        if let Some(w) = self.workers {
            p.range("workers", w as u64, 1, max_workers() as u64);
        }
        p.range("batch_size", self.batch_size as u64, 1, 65_536);
        p.range("batch_timeout_ms", self.batch_timeout_ms, 1, 60_000);
        p.range("channel_batches", self.channel_batches as u64, 1, 1024);
        p.range("max_record_bytes", self.max_record_bytes as u64, 1 << 10, 1 << 30);
    }

    pub fn resolve_paths(&mut self, base: &BaseDir) {
        if let Some(d) = &mut self.plugin_cache_dir {
            base.fix(d);
        }
    }
}
