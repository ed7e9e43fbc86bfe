//! The buffer between the sources and the workers.
//!
//! ```text
//! source 0 ─┐                        ┌─ memory (the workers have room) ─┐
//! source 1 ─┼─▶ merge: renumber ─────┤                                  ├─▶ workers ─▶ sink
//! …        ─┘                        └─ disk queue (they do not) ───────┘      │
//!                 ▲ removed once the sink has written them ◀─────────────────────┘
//! ```
//!
//! A live stream disconnects a reader that falls behind, so a live source
//! must never wait for a slow stage or sink: when the channel to the workers
//! is full, batches go to an on-disk queue instead (the Kafka spool's
//! segmented, checksummed format, [`Spool`]), and the workers take from
//! memory, then from disk, in arrival order. While the queue holds anything,
//! every new batch goes behind it, so order is kept. A full channel first
//! gathers what comes into one batch in memory (up to `batch_size` records
//! of one source): a stall of a millisecond fills it at 10,000 posts/s, and
//! the disk is for longer ones.
//!
//! Every batch handed to the workers gets the next sequence number here (the
//! sources' own numbers collide when there are several); the sink writes in
//! that order and publishes how far it has written ([`Merge::written`]).
//! Records read back from disk stay on disk until then: a crash (even
//! `kill -9`) loses none of them, and a restart hands them to the workers
//! before anything new. The sources' checkpoints (a Jetstream cursor, Kafka
//! offsets) travel with their records and are confirmed to each source once
//! the sink has written them.
//!
//! Record frames on disk: key = `u16 source | u64 origin | u64 read time (µs
//! since the epoch)`, value = the record, header `c` = the batch's checkpoint
//! (on its last record, in decimal).
//!
//! When the queue reaches `max_bytes`, `overflow` decides: `drop_oldest`
//! forgets the oldest queued records to make room (a collector far behind
//! is better off with recent posts), `drop_newest` refuses the new batch,
//! `block` stops reading the sources until there is room (nothing is lost
//! here; the stream may disconnect). Every dropped record is counted.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::batch::RawBatch;
use crate::spool::Pos;
use crate::telemetry::Metrics;

pub use super::disk_queue::{BufferConfig, BufferError, BufferOverflow, DiskBatch, DiskQueue, Dropped, Pushed};

/// A batch handed to the workers (or dropped from disk), not yet written.
#[derive(Debug)]
struct InFlight {
    /// `None`: records dropped from the queue (done once those before are).
    seq: Option<u64>,
    source: u16,
    checkpoint: Option<u64>,
    /// From the disk queue: acknowledge `(end, records, bytes)` when written.
    disk: Option<(Pos, u64, u64)>,
}

type Sending = Pin<Box<dyn Future<Output = bool> + Send>>;

/// How often the merge step looks for confirmations with batches out, and without.
const BUSY_LOOK: Duration = Duration::from_millis(1);
const IDLE_LOOK: Duration = Duration::from_millis(50);

/// Run disk work on this thread, telling a multi-threaded runtime to move
/// its other tasks elsewhere meanwhile (a current-thread runtime cannot).
fn off_reactor<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The merge and buffer step (see the module documentation).
#[derive(Debug)]
pub struct Merge {
    pub input: async_channel::Receiver<RawBatch>,
    pub output: async_channel::Sender<RawBatch>,
    pub queue: Option<DiskQueue>,
    /// Batches below this sequence number are written by the sink.
    pub written: Arc<AtomicU64>,
    /// Per source: the highest checkpoint the sink has written.
    pub checkpoints: Vec<Arc<AtomicU64>>,
    pub metrics: Arc<Metrics>,
    /// Records per batch read back from disk.
    pub batch_size: usize,
    /// `[dedup]`: the ids of written batches are committed before their
    /// records leave the disk.
    pub dedup: Option<Arc<crate::pipeline::dedup::Dedup>>,
}

/// What is still with the workers and the sink when the input has ended.
#[derive(Debug)]
pub struct Settle {
    queue: Option<DiskQueue>,
    inflight: VecDeque<InFlight>,
    written: Arc<AtomicU64>,
    checkpoints: Vec<Arc<AtomicU64>>,
    metrics: Arc<Metrics>,
    dedup: Option<Arc<crate::pipeline::dedup::Dedup>>,
}

impl Merge {
    /// Merge the sources' batches, renumber them, and hand them to the
    /// workers through memory or disk, until every source has ended and the
    /// queue is empty. Then the output closes (the workers drain) and what
    /// remains to confirm is returned: [`Settle::finish`] it once the sink
    /// has returned.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<Settle, BufferError> {
        let mut next_seq = 0u64;
        let mut inflight = VecDeque::new();
        let mut sending: Option<Sending> = None;
        let mut held: Option<RawBatch> = None;
        // Batches that came while the workers' channel was full, joined
        // (see `Merge::gather`).
        let mut gathered: Option<RawBatch> = None;
        let mut input_open = true;
        let mut announced = false;
        loop {
            settle(&mut self.queue, &mut inflight, &self.written, &self.checkpoints, self.dedup.as_deref())?;
            if let Some(b) = held.take() {
                held = self.spill(b, &mut inflight)?;
            }
            // What was gathered is older than anything on disk: it goes first.
            if sending.is_none()
                && let Some(g) = gathered.take()
            {
                sending = self.forward(g, None, &mut next_seq, &mut inflight);
            }
            // From disk while the workers take batches at once (a hand-off
            // that completes leaves `sending` empty: pop the next one now,
            // not after the next wake-up).
            while sending.is_none()
                && let Some(q) = self.queue.as_mut()
                && q.queued().0 > 0
                && let Some(d) = off_reactor(|| q.pop(self.batch_size))?
            {
                Metrics::add(&self.metrics.buffer_from_disk, d.records);
                sending = self.forward(d.batch, Some((d.end, d.records, d.bytes)), &mut next_seq, &mut inflight);
            }
            self.gauges();
            let queued = self.queue.as_ref().map_or(0, |q| q.queued().0);
            if !input_open && sending.is_none() && held.is_none() && gathered.is_none() && queued == 0 {
                break;
            }
            if shutdown.is_cancelled() && !announced && queued > 0 {
                announced = true;
                tracing::info!(
                    records = queued,
                    "draining the buffer (signal again to stop now: what is left stays on disk for the next run)"
                );
            }
            let can_take = input_open && held.is_none() && (self.queue.is_some() || sending.is_none());
            // Biased: a hand-off the workers have room for completes before
            // the next batch is looked at, so a batch goes to disk only when
            // the workers are really full (a random pick sent batches to disk
            // on a race, and every later one behind them: latency).
            tokio::select! {
                biased;
                ok = async { if let Some(s) = sending.as_mut() { s.await } else { std::future::pending().await } }, if sending.is_some() => {
                    sending = None;
                    if !ok {
                        return Err(BufferError::WorkersGone);
                    }
                }
                r = self.input.recv(), if can_take => match r {
                    Ok(b) => {
                        if sending.is_none() && queued == 0 {
                            sending = self.forward(b, None, &mut next_seq, &mut inflight);
                        } else if let Some(b) = self.gather(b, &mut gathered, queued) {
                            // A longer stall: the disk takes what was gathered
                            // first (a crash keeps it, and no checkpoint of a
                            // batch refused later passes it), then this one.
                            // Full under `block`, it stays gathered: it still
                            // goes before anything on disk.
                            if let Some(g) = gathered.take() {
                                gathered = self.spill(g, &mut inflight)?;
                            }
                            held = self.spill(b, &mut inflight)?;
                        }
                    }
                    Err(_) => input_open = false,
                },
                // Confirmations are looked at every ms while batches are out
                // (the sooner, the fewer posts a crash finds written but not
                // yet journaled or removed from disk); rarely when idle.
                () = tokio::time::sleep(if inflight.is_empty() { IDLE_LOOK } else { BUSY_LOOK }) => {}
            }
        }
        self.gauges();
        let Merge { queue, written, checkpoints, metrics, dedup, .. } = self;
        Ok(Settle { queue, inflight, written, checkpoints, metrics, dedup })
    }

    /// The workers' channel is full: join `b` to the batch gathered in
    /// memory while it has room (one source, up to `batch_size` records),
    /// else give it back (for the disk). A stall of a millisecond fills
    /// the channel at 10,000 posts/s (each post crosses alone); sending
    /// each post that comes meanwhile to disk and back cost more than the
    /// stall (every later batch goes behind the queue), and the collector
    /// fell behind for tens of ms. Gathered, they cross in one batch as
    /// soon as the workers take the next one. Only with the buffer (without
    /// it, a full channel stops the source).
    fn gather(&self, b: RawBatch, gathered: &mut Option<RawBatch>, queued: u64) -> Option<RawBatch> {
        if self.queue.is_none() || queued > 0 {
            return Some(b);
        }
        match gathered {
            None => *gathered = Some(b),
            Some(g) if g.source == b.source && g.len() + b.len() <= self.batch_size => g.append(&b),
            Some(_) => return Some(b),
        }
        None
    }

    /// Number a batch and hand it to the workers: at once when they have
    /// room (`None`), else the hand-off to wait for.
    fn forward(
        &self,
        mut b: RawBatch,
        disk: Option<(Pos, u64, u64)>,
        next_seq: &mut u64,
        inflight: &mut VecDeque<InFlight>,
    ) -> Option<Sending> {
        b.seq = *next_seq;
        *next_seq += 1;
        inflight.push_back(InFlight { seq: Some(b.seq), source: b.source, checkpoint: b.checkpoint, disk });
        match self.output.try_send(b) {
            Ok(()) => None,
            Err(async_channel::TrySendError::Full(b)) => {
                let tx = self.output.clone();
                Some(Box::pin(async move { tx.send(b).await.is_ok() }))
            }
            Err(async_channel::TrySendError::Closed(_)) => Some(Box::pin(async { false })),
        }
    }

    /// Put a batch on disk; `Some(batch)` back when the queue is full under
    /// `block` (offer it again later). A batch larger than half the queue
    /// goes in pieces, so that the policy acts on records, not on whole
    /// batches: under `drop_oldest` a batch larger than `max_bytes` kept its
    /// newest records, it was not refused as a whole (counted as newest).
    fn spill(&mut self, b: RawBatch, inflight: &mut VecDeque<InFlight>) -> Result<Option<RawBatch>, BufferError> {
        let Some(q) = self.queue.as_ref() else { return Ok(Some(b)) };
        let half = usize::try_from(q.max_bytes / 2).unwrap_or(usize::MAX).max(1);
        if b.bytes() <= half {
            return self.spill_one(b, inflight);
        }
        let mut pieces = b.split(half).into_iter();
        while let Some(p) = pieces.next() {
            if let Some(mut back) = self.spill_one(p, inflight)? {
                // Full under `block`: the rest waits, as one batch.
                for rest in pieces {
                    back.append(&rest);
                }
                return Ok(Some(back));
            }
        }
        Ok(None)
    }

    fn spill_one(&mut self, b: RawBatch, inflight: &mut VecDeque<InFlight>) -> Result<Option<RawBatch>, BufferError> {
        let Some(q) = self.queue.as_mut() else { return Ok(Some(b)) };
        let m = &self.metrics;
        match off_reactor(|| q.push(&b))? {
            Pushed::Stored { dropped } => {
                Metrics::add(&m.buffer_to_disk, b.len() as u64);
                if let Some(d) = dropped.filter(|d| d.records > 0) {
                    Metrics::add(&m.buffer_dropped_oldest, d.records);
                    inflight.push_back(InFlight {
                        seq: None,
                        source: 0,
                        checkpoint: None,
                        disk: Some((d.end, d.records, d.bytes)),
                    });
                }
                Ok(None)
            }
            Pushed::Refused { records } => {
                Metrics::add(&m.buffer_dropped_newest, records);
                // Its checkpoint is confirmed with the batches around it: a
                // dropped batch is not read again.
                inflight.push_back(InFlight { seq: None, source: b.source, checkpoint: b.checkpoint, disk: None });
                Ok(None)
            }
            Pushed::Full => {
                Metrics::add(&m.buffer_blocked, 1);
                Ok(Some(b))
            }
        }
    }

    fn gauges(&self) {
        let m = &self.metrics;
        let (records, bytes, oldest) =
            self.queue.as_ref().map_or((0, 0, 0), |q| (q.held().0, q.held().1, q.oldest_us().unwrap_or(0)));
        m.buffer_records.store(records, Ordering::Relaxed);
        m.buffer_bytes.store(bytes, Ordering::Relaxed);
        m.buffer_oldest_us.store(oldest, Ordering::Relaxed);
    }
}

/// Acknowledge, in order, what the sink has written (and dropped records
/// behind them); confirm each source's checkpoints.
fn settle(
    queue: &mut Option<DiskQueue>,
    inflight: &mut VecDeque<InFlight>,
    written: &AtomicU64,
    checkpoints: &[Arc<AtomicU64>],
    dedup: Option<&crate::pipeline::dedup::Dedup>,
) -> Result<(), BufferError> {
    let upto = written.load(Ordering::Acquire);
    if let Some(d) = dedup
        && let Err(e) = d.commit(upto)
    {
        // The posts are written; a restart may write some of them again.
        tracing::warn!(error = %e, "cannot journal the dedup ids of written posts");
    }
    while let Some(f) = inflight.front() {
        if f.seq.is_some_and(|s| s >= upto) {
            break;
        }
        if let (Some(c), Some(cp)) = (f.checkpoint, checkpoints.get(f.source as usize)) {
            cp.fetch_max(c, Ordering::Release);
        }
        if let (Some((end, records, bytes)), Some(q)) = (f.disk, queue.as_mut()) {
            q.ack(end, records, bytes)?;
        }
        inflight.pop_front();
    }
    Ok(())
}

impl Settle {
    /// The sink has returned: acknowledge what it wrote. What it did not
    /// stays on disk for the next run.
    pub fn finish(mut self) -> Result<(), BufferError> {
        settle(&mut self.queue, &mut self.inflight, &self.written, &self.checkpoints, self.dedup.as_deref())?;
        let left = self.inflight.iter().filter_map(|f| f.disk.map(|d| d.1)).sum::<u64>();
        if left > 0 {
            tracing::warn!(records = left, "buffered records not written by the sink stay on disk for the next run");
        }
        self.metrics.buffer_records.store(self.queue.as_ref().map_or(0, |q| q.held().0), Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
#[path = "buffer_tests.rs"]
mod tests;
