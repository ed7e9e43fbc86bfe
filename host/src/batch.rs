//! Batch types: one contiguous buffer with record boundaries.
//!
//! The bottom of the crate: sources fill [`RawBatch`]es (through a
//! [`Batcher`]), workers turn them into [`OutBatch`]es, sinks restore their
//! order ([`Reorder`]) and write them. Depends on nothing else in the crate.

use std::collections::BTreeMap;
use std::ops::Range;

/// Records read by a source, in order.
#[derive(Debug, Default, Clone)]
pub struct RawBatch {
    /// Position of this batch in the source's output (0, 1, 2 …).
    pub seq: u64,
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
        self.current.data.reserve(b.data.len());
        b
    }
}

/// Records ready for a sink, in order: one line each (no trailing newline in
/// `data`; sinks add their own framing).
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
    /// The source position of the raw batch this came from.
    pub checkpoint: Option<u64>,
    /// When the raw batch's first record was read.
    pub read_at: Option<std::time::Instant>,
}

impl OutBatch {
    pub fn with_seq(seq: u64) -> OutBatch {
        OutBatch { seq, ..OutBatch::default() }
    }
    pub fn len(&self) -> usize {
        self.ends.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
    pub fn bytes(&self) -> usize {
        self.data.len()
    }
    pub fn push(&mut self, record: &[u8], key: &str) {
        self.push_with_rules(record, key, std::iter::empty());
    }

    /// A record with the ids of the rules it matched.
    pub fn push_with_rules<'r>(&mut self, record: &[u8], key: &str, rules: impl Iterator<Item = &'r str>) {
        self.data.extend_from_slice(record);
        self.ends.push(self.data.len());
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
            start = end;
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

#[cfg(test)]
mod tests {
    use super::*;

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
