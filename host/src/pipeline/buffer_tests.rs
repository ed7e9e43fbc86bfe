//! Tests of `buffer.rs`.

use super::*;
use std::time::Instant;

fn cfg(max_bytes: u64, overflow: BufferOverflow) -> BufferConfig {
    BufferConfig { max_bytes, overflow, segment_bytes: 4096, ..BufferConfig::default() }
}

fn batch(source: u16, ids: std::ops::Range<u32>, checkpoint: Option<u64>) -> RawBatch {
    let mut b = RawBatch::default();
    b.source = source;
    for i in ids {
        b.push(format!("{{\"id\":{i}}}").as_bytes(), u64::from(i));
    }
    b.checkpoint = checkpoint;
    b
}

fn ids(b: &RawBatch) -> Vec<u64> {
    b.iter().map(|(_, origin)| origin).collect()
}

/// Issue 23, point 7: a restarted collector found the lock of its
/// killed predecessor still held and refused at once. It waits now.
#[test]
fn a_held_lock_is_waited_for_then_taken() {
    let dir = tempfile::tempdir().expect("tmp");
    let c = BufferConfig { lock_wait_secs: 20, ..cfg(1 << 20, BufferOverflow::Block) };
    let first = DiskQueue::open(dir.path(), &c).expect("open");
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(first);
    });
    let started = Instant::now();
    let second = DiskQueue::open(dir.path(), &c);
    assert!(second.is_ok(), "{:?}", second.err());
    assert!(started.elapsed() >= Duration::from_millis(250), "it did wait for the holder");
    release.join().expect("thread");
}

#[test]
fn records_come_back_in_order_by_source_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let c = cfg(1 << 20, BufferOverflow::Block);
    let mut q = DiskQueue::open(dir.path(), &c).expect("open");
    let at_once = BufferConfig { lock_wait_secs: 0, ..c.clone() };
    match DiskQueue::open(dir.path(), &at_once) {
        Err(BufferError::Locked { holder, .. }) => {
            assert!(holder.contains(&format!("pid {}", std::process::id())), "names the holder: {holder}");
        }
        other => panic!("one collector per dir: {other:?}"),
    }
    assert_eq!(q.push(&batch(0, 0..10, Some(77))).expect("push"), Pushed::Stored { dropped: None });
    q.push(&batch(1, 10..15, None)).expect("push");
    q.push(&batch(0, 15..20, None)).expect("push");
    assert_eq!(q.queued().0, 20);
    assert!(q.oldest_us().is_some());
    let a = q.pop(8).expect("pop").expect("some");
    assert_eq!((ids(&a.batch), a.batch.source, a.batch.checkpoint), ((0..8).collect(), 0, None));
    let b = q.pop(100).expect("pop").expect("some");
    assert_eq!((ids(&b.batch), b.batch.checkpoint), ((8..10).collect(), Some(77)), "one source per batch");
    q.ack(a.end, a.records, a.bytes).expect("ack");
    drop(q);
    // Restart: everything not acknowledged comes back, in order.
    let mut q = DiskQueue::open(dir.path(), &c).expect("reopen");
    assert_eq!(q.queued().0, 12);
    let mut got = Vec::new();
    while let Some(d) = q.pop(100).expect("pop") {
        got.push((d.batch.source, ids(&d.batch)));
        q.ack(d.end, d.records, d.bytes).expect("ack");
    }
    assert_eq!(got, vec![(0, (8..10).collect()), (1, (10..15).collect()), (0, (15..20).collect())]);
    assert_eq!(q.queued(), (0, 0));
    assert!(q.oldest_us().is_none());
}

/// The merge step with a reader slower than the input: batches go to
/// disk and come back in order, numbered without gaps; the disk is
/// emptied only as far as the sink confirms; checkpoints follow.
#[tokio::test]
async fn the_merge_keeps_order_through_disk_and_removes_only_what_was_written() {
    let dir = tempfile::tempdir().expect("tmp");
    let c = cfg(1 << 20, BufferOverflow::Block);
    let (in_tx, in_rx) = async_channel::bounded(2);
    let (out_tx, out_rx) = async_channel::bounded(1);
    let written = Arc::new(AtomicU64::new(0));
    let checkpoint = Arc::new(AtomicU64::new(0));
    let metrics = Arc::new(Metrics::default());
    let merge = Merge {
        input: in_rx,
        output: out_tx,
        queue: Some(DiskQueue::open(dir.path(), &c).expect("open")),
        written: written.clone(),
        checkpoints: vec![checkpoint.clone()],
        metrics: metrics.clone(),
        batch_size: 12,
        dedup: None,
    };
    let task = tokio::spawn(merge.run(CancellationToken::new()));
    for i in 0..20u32 {
        in_tx.send(batch(0, i * 5..i * 5 + 5, Some(u64::from(i) + 1))).await.expect("send");
    }
    drop(in_tx);
    let (mut ids_out, mut seqs) = (Vec::new(), Vec::new());
    while let Ok(b) = out_rx.recv().await {
        seqs.push(b.seq);
        ids_out.extend(ids(&b));
        if b.seq == 1 {
            // Nothing confirmed yet: what was read back is still on disk.
            assert!(metrics.buffer_records.load(Ordering::Relaxed) > 0);
        }
        written.store(b.seq + 1, Ordering::Release);
    }
    let settle = task.await.expect("task").expect("merge");
    settle.finish().expect("finish");
    assert_eq!(ids_out, (0..100).collect::<Vec<_>>(), "in order, once each");
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>(), "numbered without gaps");
    assert!(metrics.buffer_to_disk.load(Ordering::Relaxed) > 0, "the slow reader sent batches to disk");
    assert_eq!(checkpoint.load(Ordering::Acquire), 20, "the last checkpoint is confirmed");
    let q = DiskQueue::open(dir.path(), &c).expect("reopen");
    assert_eq!(q.held(), (0, 0), "everything written was removed");
}

/// Issue 23: a short stall of the workers (the channel full for a moment)
/// sends nothing to disk: what comes meanwhile is gathered into one batch
/// that crosses as soon as the workers take the next; only past
/// `batch_size` records does the disk take the rest, in order.
#[tokio::test]
async fn a_short_stall_gathers_in_memory_and_a_long_one_goes_to_disk() {
    let dir = tempfile::tempdir().expect("tmp");
    let (in_tx, in_rx) = async_channel::bounded(64);
    let (out_tx, out_rx) = async_channel::bounded(1);
    let metrics = Arc::new(Metrics::default());
    let written = Arc::new(AtomicU64::new(0));
    let merge = Merge {
        input: in_rx,
        output: out_tx,
        queue: Some(DiskQueue::open(dir.path(), &cfg(1 << 20, BufferOverflow::Block)).expect("open")),
        written: written.clone(),
        checkpoints: vec![Arc::new(AtomicU64::new(0))],
        metrics: metrics.clone(),
        batch_size: 6,
        dedup: None,
    };
    let task = tokio::spawn(merge.run(CancellationToken::new()));
    // Nobody reads: one batch in the channel, one waiting to enter, the
    // next three (6 records) gathered.
    for i in 0..5u32 {
        in_tx.send(batch(0, i * 2..i * 2 + 2, None)).await.expect("send");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(metrics.buffer_to_disk.load(Ordering::Relaxed), 0, "a short stall stays in memory");
    let mut got = Vec::new();
    for _ in 0..3 {
        let b = out_rx.recv().await.expect("batch");
        written.store(b.seq + 1, Ordering::Release);
        got.push(ids(&b));
    }
    assert_eq!(got, vec![vec![0, 1], vec![2, 3], (4..10).collect::<Vec<_>>()], "gathered into one batch, in order");
    // A longer stall: past batch_size the disk takes the rest.
    for i in 5..12u32 {
        in_tx.send(batch(0, i * 2..i * 2 + 2, None)).await.expect("send");
    }
    drop(in_tx);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(metrics.buffer_to_disk.load(Ordering::Relaxed) > 0, "a long stall spills");
    let mut rest = Vec::new();
    while let Ok(b) = out_rx.recv().await {
        written.store(b.seq + 1, Ordering::Release);
        rest.extend(ids(&b));
    }
    task.await.expect("task").expect("merge").finish().expect("finish");
    assert_eq!(rest, (10..24).collect::<Vec<_>>(), "once each, in order");
}

#[test]
fn overflow_policies_count_exactly() {
    let one = {
        let dir = tempfile::tempdir().expect("tmp");
        let mut q = DiskQueue::open(dir.path(), &cfg(1 << 20, BufferOverflow::Block)).expect("open");
        q.push(&batch(0, 10..20, None)).expect("push");
        q.queued().1
    };
    // Room for two batches of ten.
    for policy in [BufferOverflow::DropOldest, BufferOverflow::DropNewest, BufferOverflow::Block] {
        let dir = tempfile::tempdir().expect("tmp");
        let mut q = DiskQueue::open(dir.path(), &cfg(2 * one + 5, policy)).expect("open");
        q.push(&batch(0, 10..20, None)).expect("push");
        q.push(&batch(0, 20..30, None)).expect("push");
        let third = q.push(&batch(0, 30..40, None)).expect("push");
        let mut left = Vec::new();
        while let Some(d) = q.pop(100).expect("pop") {
            left.extend(ids(&d.batch));
        }
        match policy {
            BufferOverflow::DropOldest => {
                let Pushed::Stored { dropped: Some(d) } = third else { panic!("{third:?}") };
                assert_eq!(d.records, 10);
                assert_eq!(left, (20..40).collect::<Vec<_>>());
            }
            BufferOverflow::DropNewest => {
                assert_eq!(third, Pushed::Refused { records: 10 });
                assert_eq!(left, (10..30).collect::<Vec<_>>());
            }
            BufferOverflow::Block => {
                assert_eq!(third, Pushed::Full);
                assert_eq!(left, (10..30).collect::<Vec<_>>());
            }
        }
    }
}

/// Issue 25, point 5: records are keyed by source name on disk; reordering
/// `[[sources]]` reads each back as the source that wrote it, with its
/// cursor; a source removed from the pipeline gives its records to the
/// first source without confirming any cursor.
#[test]
fn buffered_records_follow_their_source_by_name_across_a_reorder() {
    let dir = tempfile::tempdir().expect("tmp");
    let c = cfg(1 << 20, BufferOverflow::Block);
    let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let mut q = DiskQueue::open(dir.path(), &c).expect("open").with_sources(&names(&["x-a", "x-b"])).expect("names");
    q.push(&batch(1, 0..3, Some(500))).expect("push b");
    q.push(&batch(0, 3..5, Some(900))).expect("push a");
    drop(q);
    let mut q = DiskQueue::open(dir.path(), &c).expect("reopen").with_sources(&names(&["x-b", "x-a"])).expect("names");
    let first = q.pop(100).expect("pop").expect("some");
    assert_eq!((ids(&first.batch), first.batch.source, first.batch.checkpoint), ((0..3).collect(), 0, Some(500)));
    let second = q.pop(100).expect("pop").expect("some");
    assert_eq!((ids(&second.batch), second.batch.source, second.batch.checkpoint), ((3..5).collect(), 1, Some(900)));
    drop(q);
    // x-b is gone: its records still come out (as x-a's), with no cursor confirmed.
    let mut q = DiskQueue::open(dir.path(), &c).expect("reopen").with_sources(&names(&["x-a"])).expect("names");
    let first = q.pop(100).expect("pop").expect("some");
    assert_eq!((ids(&first.batch), first.batch.source, first.batch.checkpoint), ((0..3).collect(), 0, None));
    let second = q.pop(100).expect("pop").expect("some");
    assert_eq!((ids(&second.batch), second.batch.source, second.batch.checkpoint), ((3..5).collect(), 0, Some(900)));
}
