//! Batch types: one contiguous buffer with record boundaries.
//!
//! The bottom of the crate: sources fill [`RawBatch`]es (through a
//! [`Batcher`]), workers turn them into [`OutBatch`]es, sinks restore their
//! order ([`Reorder`]) and write them. Depends on nothing else in the crate.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;

/// `max_record_bytes` unless set: 16 MiB (the longest record a source
/// frames and a batch holds).
pub const DEFAULT_MAX_RECORD_BYTES: usize = 16 << 20;

/// Record buffers of batches that were dropped, for the next batches.
///
/// A batch buffer holds megabytes; a fresh one costs a page fault per page
/// (the kernel zeroes each one, 13 % of a profile of the track-400 scale
/// bench) and the copies of growing it. Buffers go round instead: a dropped
/// batch gives its buffer back, a new one takes it. Bounded in count and
/// size, so a burst of huge batches is not kept for ever.
mod buffers {
    use super::Mutex;

    /// Buffers kept at most (more than the batches in flight between
    /// source, workers and sink with the default channel sizes).
    const KEPT: usize = 32;
    /// A buffer larger than this goes back to the allocator.
    const MAX_KEPT_BYTES: usize = 32 << 20;

    static FREE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

    /// An empty buffer with room for `bytes`.
    pub fn take(bytes: usize) -> Vec<u8> {
        let mut buf = FREE.lock().map(|mut f| f.pop()).ok().flatten().unwrap_or_default();
        buf.reserve(bytes);
        buf
    }

    /// Give a buffer back (its content is dropped).
    pub fn give(mut buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > MAX_KEPT_BYTES {
            return;
        }
        buf.clear();
        if let Ok(mut free) = FREE.lock()
            && free.len() < KEPT
        {
            free.push(buf);
        }
    }

    #[cfg(test)]
    pub fn kept() -> usize {
        FREE.lock().map(|f| f.len()).unwrap_or(0)
    }
}

/// Records read by a source, in order.
#[derive(Debug, Default, Clone)]
pub struct RawBatch {
    /// Position of this batch in the source's output (0, 1, 2 …); the
    /// buffer renumbers batches in the order it hands them to the workers.
    pub seq: u64,
    /// Which of the pipeline's sources read it (index into its `[[sources]]`).
    pub source: u16,
    data: Vec<u8>,
    ends: Vec<usize>,
    /// Where each record came from (the line number for files), for error reports.
    origins: Vec<u64>,
    /// Source position reached by this batch (e.g. a Jetstream cursor), passed
    /// through to the sink, which confirms it once the batch is written.
    pub checkpoint: Option<u64>,
    /// When its first record was read (end-to-end latency).
    pub read_at: Option<std::time::Instant>,
}

impl Drop for RawBatch {
    fn drop(&mut self) {
        buffers::give(std::mem::take(&mut self.data));
    }
}

impl RawBatch {
    pub fn len(&self) -> usize {
        self.ends.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
    pub fn bytes(&self) -> usize {
        self.data.len()
    }
    pub fn push(&mut self, record: &[u8], origin: u64) {
        if self.ends.is_empty() {
            self.read_at = Some(std::time::Instant::now());
        }
        self.data.extend_from_slice(record);
        self.ends.push(self.data.len());
        self.origins.push(origin);
    }
    /// Cut into batches of at most `max_bytes` of records each (at least one
    /// record each), in order; the checkpoint goes with the last piece, the
    /// read time and source with every piece.
    pub fn split(self, max_bytes: usize) -> Vec<RawBatch> {
        let empty = || {
            let mut b = RawBatch::default();
            (b.seq, b.source, b.read_at) = (self.seq, self.source, self.read_at);
            b
        };
        let mut out = Vec::new();
        let mut piece = empty();
        for (r, origin) in self.iter() {
            if !piece.is_empty() && piece.bytes() + r.len() > max_bytes {
                out.push(std::mem::replace(&mut piece, empty()));
            }
            piece.data.extend_from_slice(r);
            piece.ends.push(piece.data.len());
            piece.origins.push(origin);
        }
        piece.checkpoint = self.checkpoint;
        out.push(piece);
        out
    }

    /// Append another batch's records (same source) after these.
    pub fn append(&mut self, other: &RawBatch) {
        for (r, origin) in other.iter() {
            self.data.extend_from_slice(r);
            self.ends.push(self.data.len());
            self.origins.push(origin);
        }
        if other.checkpoint.is_some() {
            self.checkpoint = other.checkpoint;
        }
    }

    /// Records with their origins.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], u64)> {
        let mut start = 0;
        self.ends.iter().zip(&self.origins).map(move |(&end, &origin)| {
            let r = &self.data[start..end];
            start = end;
            (r, origin)
        })
    }
}

/// Collects records into batches of at most `max` records.
#[derive(Debug)]
pub struct Batcher {
    max: usize,
    next_seq: u64,
    current: RawBatch,
}

impl Batcher {
    pub fn new(max: usize) -> Batcher {
        Batcher { max: max.max(1), next_seq: 0, current: RawBatch::default() }
    }

    /// [`Batcher::push`] of a record whose bytes were read at `read_at`
    /// (a live source stamps them as they come off the wire).
    pub fn push_at(&mut self, record: &[u8], origin: u64, read_at: std::time::Instant) -> Option<RawBatch> {
        let first = self.current.is_empty();
        self.current.push(record, origin);
        if first || self.current.read_at.is_none_or(|t| read_at < t) {
            self.current.read_at = Some(read_at);
        }
        (self.current.len() >= self.max).then(|| self.take())
    }

    /// Add a record; returns a full batch when one is complete.
    pub fn push(&mut self, record: &[u8], origin: u64) -> Option<RawBatch> {
        self.current.push(record, origin);
        (self.current.len() >= self.max).then(|| self.take())
    }

    /// The partial batch, if it holds anything.
    pub fn flush(&mut self) -> Option<RawBatch> {
        (!self.current.is_empty()).then(|| self.take())
    }

    pub fn pending(&self) -> usize {
        self.current.len()
    }

    /// Record the source position reached by the records added so far.
    pub fn checkpoint(&mut self, position: u64) {
        self.current.checkpoint = Some(self.current.checkpoint.map_or(position, |c| c.max(position)));
    }

    fn take(&mut self) -> RawBatch {
        let mut b = std::mem::take(&mut self.current);
        b.seq = self.next_seq;
        self.next_seq += 1;
        self.current.data = buffers::take(b.data.len());
        b
    }
}

/// Records ready for a sink, in order: one line each. `data` holds every
/// record followed by a newline, so a line-oriented sink writes the whole
/// batch at once ([`OutBatch::lines`]); [`OutBatch::iter`] gives the records
/// without it (a Kafka message, for instance).
#[derive(Debug, Default, Clone)]
pub struct OutBatch {
    pub seq: u64,
    data: Vec<u8>,
    ends: Vec<usize>,
    /// Kafka message key per record (the post id; empty for control messages).
    keys: Vec<Range<usize>>,
    key_data: String,
    /// Matched rule ids per record, comma-separated (Kafka header).
    rules: Vec<Range<usize>>,
    rule_data: String,
    /// Records for the dead-letter destination, in order.
    dead_data: Vec<u8>,
    dead_ends: Vec<usize>,
    /// When the raw batch's first record was read.
    pub read_at: Option<std::time::Instant>,
}

impl Drop for OutBatch {
    fn drop(&mut self) {
        buffers::give(std::mem::take(&mut self.data));
    }
}

impl OutBatch {
    pub fn with_seq(seq: u64) -> OutBatch {
        OutBatch::with_room(seq, 0)
    }

    /// A batch whose buffer has room for `bytes` already: grown once, not
    /// by doubling (each doubling of a megabyte buffer faults in fresh,
    /// zeroed pages: 4 % of an end-to-end profile).
    pub fn with_room(seq: u64, bytes: usize) -> OutBatch {
        let mut b = OutBatch::default();
        b.seq = seq;
        b.data = buffers::take(bytes);
        b
    }
    pub fn len(&self) -> usize {
        self.ends.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
    /// Bytes of the records, without their newlines.
    pub fn bytes(&self) -> usize {
        self.data.len() - self.ends.len()
    }
    /// Every record followed by a newline: what a file sink writes.
    pub fn lines(&self) -> &[u8] {
        &self.data
    }
    pub fn push(&mut self, record: &[u8], key: &str) {
        self.push_with_rules(record, key, std::iter::empty());
    }

    /// A record with the ids of the rules it matched.
    pub fn push_with_rules<'r>(&mut self, record: &[u8], key: &str, rules: impl Iterator<Item = &'r str>) {
        self.data.extend_from_slice(record);
        self.ends.push(self.data.len());
        self.data.push(b'\n');
        self.push_meta(key, rules);
    }

    /// A record that `write` appends to the batch's buffer in place (one copy
    /// of each record fewer than writing it elsewhere and pushing it). When
    /// `write` returns false, whatever it wrote is dropped and nothing is added.
    pub fn push_written<'r>(
        &mut self,
        write: impl FnOnce(&mut Vec<u8>) -> bool,
        key: &str,
        rules: impl Iterator<Item = &'r str>,
    ) -> bool {
        let start = self.data.len();
        if !write(&mut self.data) {
            self.data.truncate(start);
            return false;
        }
        self.ends.push(self.data.len());
        self.data.push(b'\n');
        self.push_meta(key, rules);
        true
    }

    fn push_meta<'r>(&mut self, key: &str, rules: impl Iterator<Item = &'r str>) {
        let k = self.key_data.len();
        self.key_data.push_str(key);
        self.keys.push(k..self.key_data.len());
        let r = self.rule_data.len();
        for (i, id) in rules.enumerate() {
            if i > 0 {
                self.rule_data.push(',');
            }
            self.rule_data.push_str(id);
        }
        self.rules.push(r..self.rule_data.len());
    }

    /// `(record, key, rule ids)` triples.
    pub fn iter_full(&self) -> impl Iterator<Item = (&[u8], &str, &str)> {
        self.iter().zip(&self.rules).map(|((r, k), rr)| (r, k, &self.rule_data[rr.clone()]))
    }
    /// Add a record for the dead-letter destination.
    pub fn push_dead(&mut self, record: &[u8]) {
        self.dead_data.extend_from_slice(record);
        self.dead_ends.push(self.dead_data.len());
    }
    pub fn dead_len(&self) -> usize {
        self.dead_ends.len()
    }
    /// Dead-letter records.
    pub fn iter_dead(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.dead_ends.iter().map(move |&end| {
            let r = &self.dead_data[start..end];
            start = end;
            r
        })
    }
    /// `(record, key)` pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &str)> {
        let mut start = 0;
        self.ends.iter().zip(&self.keys).map(move |(&end, k)| {
            let r = &self.data[start..end];
            start = end + 1;
            (r, &self.key_data[k.clone()])
        })
    }
}

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

/// Whether the workers want a batch now: how many are registered and how
/// many wait for one. A live source hands over what it holds at once while
/// a worker waits ("a batch must not wait to fill while a worker is idle")
/// and lets the batch grow for a moment (up to [`Demand::HOLD`]) while every
/// worker is busy, so that at high rates records cross the threads in
/// batches instead of one by one.
#[derive(Debug, Default)]
pub struct Demand {
    workers: std::sync::atomic::AtomicUsize,
    waiting: std::sync::atomic::AtomicUsize,
    wake: tokio::sync::Notify,
}

impl Demand {
    /// How long a batch may grow while no worker waits.
    pub const HOLD: std::time::Duration = std::time::Duration::from_millis(1);

    /// A worker starts (it counts from now on).
    pub fn register(&self) {
        self.workers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    /// A worker ends.
    pub fn unregister(&self) {
        self.workers.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
    /// A worker is about to wait for a batch: tell a holding source.
    pub fn enter_wait(&self) {
        self.waiting.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        // notify_waiters wakes every source holding a batch; notify_one
        // leaves a permit for a source not waiting right now (between two
        // selects), so that wake-up is not lost either.
        self.wake.notify_waiters();
        self.wake.notify_one();
    }
    /// The worker got a batch (or the channel closed).
    pub fn leave_wait(&self) {
        self.waiting.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
    /// Hand over now? True while a worker waits, or when no worker is
    /// registered (tools, tests: nothing to wait for).
    pub fn wanted(&self) -> bool {
        self.workers.load(std::sync::atomic::Ordering::Relaxed) == 0
            || self.waiting.load(std::sync::atomic::Ordering::Acquire) > 0
    }
    /// Resolves when a worker starts waiting (or did since the last call).
    /// Every holder is woken (several live sources share the workers).
    pub async fn worker_waits(&self) {
        self.wake.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_splits_by_bytes_and_appends_back() {
        let mut b = RawBatch::default();
        b.source = 3;
        for i in 0..10u64 {
            b.push(format!("record-{i}").as_bytes(), 100 + i);
        }
        b.checkpoint = Some(42);
        let pieces = b.clone().split(20);
        assert!(pieces.len() > 1 && pieces.iter().all(|p| p.bytes() <= 20 && p.source == 3));
        assert_eq!(pieces.iter().filter_map(|p| p.checkpoint).collect::<Vec<_>>(), vec![42], "on the last piece");
        let mut whole = pieces[0].clone();
        for p in &pieces[1..] {
            whole.append(p);
        }
        let got: Vec<(Vec<u8>, u64)> = whole.iter().map(|(r, o)| (r.to_vec(), o)).collect();
        let want: Vec<(Vec<u8>, u64)> = b.iter().map(|(r, o)| (r.to_vec(), o)).collect();
        assert_eq!(got, want);
        assert_eq!(whole.checkpoint, Some(42));
        // A record larger than the limit is a piece of its own.
        assert_eq!(b.split(1).len(), 10);
    }

    #[test]
    fn batcher_numbers_and_splits() {
        let mut b = Batcher::new(2);
        assert!(b.push(b"a", 1).is_none());
        let first = b.push(b"bb", 2).expect("full");
        assert_eq!(first.seq, 0);
        assert_eq!(first.iter().collect::<Vec<_>>(), vec![(&b"a"[..], 1), (&b"bb"[..], 2)]);
        assert!(b.push(b"c", 3).is_none());
        let last = b.flush().expect("partial");
        assert_eq!(last.seq, 1);
        assert!(b.flush().is_none());
    }

    /// Buffers go round: a dropped batch's buffer serves a later batch,
    /// which starts empty whatever the earlier one held.
    #[test]
    fn batch_buffers_are_reused_and_start_empty() {
        let mut b = Batcher::new(2);
        let big = vec![b'x'; 1 << 20];
        b.push(&big, 1);
        let full = b.push(&big, 2).expect("full");
        assert_eq!(full.bytes(), 2 << 20);
        drop(full);
        assert!(buffers::kept() >= 1);
        let mut out = OutBatch::with_seq(7);
        assert_eq!((out.len(), out.bytes()), (0, 0), "a reused buffer starts empty");
        assert!(out.data.capacity() >= 2 << 20, "the dropped batch's buffer is reused");
        out.push(b"{}", "");
        assert_eq!(out.iter().collect::<Vec<_>>(), vec![(&b"{}"[..], "")]);
        assert!(out.push_written(
            |b| {
                b.extend_from_slice(b"[1]");
                true
            },
            "k",
            ["r1", "r2"].into_iter()
        ));
        assert!(!out.push_written(
            |b| {
                b.extend_from_slice(b"dropped");
                false
            },
            "x",
            std::iter::empty()
        ));
        assert_eq!(out.iter_full().collect::<Vec<_>>(), vec![(&b"{}"[..], "", ""), (&b"[1]"[..], "k", "r1,r2")]);
        assert_eq!((out.len(), out.bytes(), out.lines()), (2, 5, &b"{}\n[1]\n"[..]));
        let partial = b.flush();
        assert!(partial.is_none(), "the batcher's next batch is empty");
        // Never more than KEPT buffers, and none beyond the size bound.
        for _ in 0..100 {
            drop(OutBatch::with_seq(0));
            buffers::give(Vec::with_capacity(16));
        }
        buffers::give(Vec::with_capacity(64 << 20));
        assert!(buffers::kept() <= 32);
    }

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
