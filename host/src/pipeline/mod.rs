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

pub mod batch;
pub mod worker;

pub use batch::{Batcher, OutBatch, RawBatch};
pub use worker::{Compiled, Fatal, FatalStageError, WorkerContext, WorkerScratch, process_batch};

use std::collections::BTreeMap;

/// Restores source order of batches processed by several workers.
#[derive(Debug, Default)]
pub struct Reorder {
    next: u64,
    waiting: BTreeMap<u64, OutBatch>,
}

impl Reorder {
    /// Accept a batch; return those now in order.
    pub fn push(&mut self, b: OutBatch) -> Vec<OutBatch> {
        self.waiting.insert(b.seq, b);
        let mut ready = Vec::new();
        while let Some(b) = self.waiting.remove(&self.next) {
            self.next += 1;
            ready.push(b);
        }
        ready
    }

    /// Whatever is still waiting (only after a gap, which workers never leave).
    pub fn drain(&mut self) -> Vec<OutBatch> {
        std::mem::take(&mut self.waiting).into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reorder_restores_sequence() {
        let mut r = Reorder::default();
        let b = OutBatch::with_seq;
        assert!(r.push(b(1)).is_empty());
        assert!(r.push(b(2)).is_empty());
        let got: Vec<u64> = r.push(b(0)).iter().map(|b| b.seq).collect();
        assert_eq!(got, vec![0, 1, 2]);
        assert_eq!(r.push(b(3)).len(), 1);
    }
}
