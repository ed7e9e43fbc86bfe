//! The hand-off from the workers to the sink, and the in-order writer of the
//! blocking sinks.
//!
//! ```text
//! worker ─┐ send ┌──────────┐ pump: whoever holds the writer's lock drains
//! worker ─┼─────▶│ channel  │──────▶ the channel, restores order, writes and
//! worker ─┘      └──────────┘       flushes (the sink's thread only waits)
//! ```
//!
//! A blocking sink (`stdout`, `file`) lends its writer to the hand-off while
//! it runs ([`write_all_batches`]): a worker that has sent a batch takes the
//! writer's lock if it is free and writes what the channel holds itself. At
//! 10,000 posts/s every post crosses alone, and waking the sink's thread for
//! each one was a futex call and a thread switch per post (most of the
//! collector's CPU was such wake-ups). A worker that finds the lock taken
//! leaves its batch to the holder, which looks at the channel again after
//! letting go, so no batch is left behind. The sink's own thread sleeps until
//! the workers have gone, then writes what is left and finishes.
//!
//! A sink that runs on the reactor (`kafka`) receives from the channel as
//! before; no writer is lent, and a worker's pump does nothing.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, TryLockError};
use std::time::Instant;

use super::{DeadLetters, LineSink, SinkError, SinkSummary};
use crate::batch::{OutBatch, Reorder};
use crate::telemetry::Metrics;

/// How long written lines may wait in a sink's buffer while more batches
/// are queued behind them: past it they are flushed even so (latency), below
/// it more batches join the same write (throughput).
const FLUSH_AFTER: std::time::Duration = std::time::Duration::from_micros(500);

/// How often the sink's thread looks for batches nobody wrote.
const LOOK_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// A bounded hand-off for `n` batches.
pub fn channel(n: usize) -> (BatchTx, BatchRx) {
    let (tx, rx) = async_channel::bounded(n);
    let shared = Arc::new(Shared {
        rx: rx.clone(),
        writer: Mutex::new(None),
        lent: AtomicBool::new(false),
        senders: AtomicUsize::new(1),
        gone: (Mutex::new(false), Condvar::new()),
    });
    (BatchTx { tx, shared: shared.clone() }, BatchRx { rx, shared })
}

struct Shared {
    /// The workers' way to the batches they and the others sent.
    rx: async_channel::Receiver<OutBatch>,
    /// The writer, while a blocking sink lends it.
    writer: Mutex<Option<Writer>>,
    lent: AtomicBool,
    /// Live senders; the sink's thread waits for none (or a failure).
    senders: AtomicUsize,
    gone: (Mutex<bool>, Condvar),
}

impl Shared {
    /// Writing failed: senders blocked on a full channel, and those to
    /// come, stop; the sink's thread takes the writer back.
    fn stop(&self) {
        self.rx.close();
        self.wake_sink();
    }

    fn wake_sink(&self) {
        let (flag, cv) = &self.gone;
        *flag.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        cv.notify_all();
    }

    /// Write what the channel holds if nobody else is; false when the
    /// writer has failed (the run must stop).
    fn pump(&self) -> bool {
        if !self.lent.load(Ordering::Acquire) {
            return true;
        }
        loop {
            let mut guard = match self.writer.try_lock() {
                Ok(g) => g,
                // The holder looks at the channel again after letting go.
                Err(TryLockError::WouldBlock) => return true,
                // A panic while writing (a bug): stop as on a failed write;
                // the sink reports it when it takes the writer back.
                Err(TryLockError::Poisoned(_)) => {
                    self.stop();
                    return false;
                }
            };
            let Some(w) = guard.as_mut() else { return self.lent.load(Ordering::Acquire) };
            if w.failed.is_some() {
                return false;
            }
            if let Err(e) = w.drain(&self.rx) {
                w.failed = Some(e);
                drop(guard);
                self.stop();
                return false;
            }
            drop(guard);
            // The unlock before the look (a sender that lost the race for
            // the lock sent before trying it).
            std::sync::atomic::fence(Ordering::SeqCst);
            if self.rx.is_empty() {
                return true;
            }
        }
    }
}

/// The workers' side.
pub struct BatchTx {
    tx: async_channel::Sender<OutBatch>,
    shared: Arc<Shared>,
}

impl Clone for BatchTx {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::AcqRel);
        BatchTx { tx: self.tx.clone(), shared: self.shared.clone() }
    }
}

impl Drop for BatchTx {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.wake_sink();
        }
    }
}

impl std::fmt::Debug for BatchTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchTx").field("queued", &self.tx.len()).finish()
    }
}

/// The sink went away or failed: the batch was not taken.
#[derive(Debug, thiserror::Error)]
#[error("the sink has stopped")]
pub struct SinkGone;

impl BatchTx {
    /// Hand a batch over (waiting while the channel is full), then write
    /// what is ready if the writer is free.
    pub fn send_blocking(&self, b: OutBatch) -> Result<(), SinkGone> {
        self.tx.send_blocking(b).map_err(|_| SinkGone)?;
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.shared.pump() { Ok(()) } else { Err(SinkGone) }
    }

    /// Hand a batch over from the reactor, to a sink on the reactor
    /// (Kafka; benches): it never writes itself, a blocking write has no
    /// place on the reactor.
    pub async fn send(&self, b: OutBatch) -> Result<(), SinkGone> {
        self.tx.send(b).await.map_err(|_| SinkGone)
    }
}

/// The sink's side.
pub struct BatchRx {
    rx: async_channel::Receiver<OutBatch>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for BatchRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchRx").field("queued", &self.rx.len()).finish()
    }
}

impl Drop for BatchRx {
    /// No sink takes batches any more: senders stop (the workers hold a
    /// receiver of their own to pump with, which must not keep it open).
    fn drop(&mut self) {
        self.rx.close();
    }
}

impl BatchRx {
    /// The next batch (a sink on the reactor); an error once every sender
    /// has gone and the channel is empty.
    pub async fn recv(&self) -> Result<OutBatch, async_channel::RecvError> {
        self.rx.recv().await
    }

    /// Refuse further batches (the reader has gone: stop the pipeline).
    pub fn close(&self) {
        self.rx.close();
    }
}

/// The in-order writing state of a blocking sink.
struct Writer {
    out: Box<dyn LineSink + Send>,
    dead: DeadLetters,
    metrics: Arc<Metrics>,
    confirmed: Arc<AtomicU64>,
    reorder: Reorder,
    summary: SinkSummary,
    /// Batches below this sequence number are written; published once flushed.
    written: u64,
    /// (read at, records) of the batches written since the last flush.
    unflushed: Vec<(Option<Instant>, u64)>,
    unflushed_since: Option<Instant>,
    failed: Option<SinkError>,
}

impl Writer {
    /// Take every batch the channel holds, write those in order, flush
    /// when none is waiting (or the oldest written is [`FLUSH_AFTER`] old).
    fn drain(&mut self, rx: &async_channel::Receiver<OutBatch>) -> Result<(), SinkError> {
        while let Ok(batch) = rx.try_recv() {
            for b in self.reorder.push(batch) {
                self.write(b)?;
            }
            if self.unflushed_since.is_some_and(|t| t.elapsed() >= FLUSH_AFTER) {
                self.flush()?;
            }
        }
        if self.unflushed_since.is_some() { self.flush() } else { Ok(()) }
    }

    fn write(&mut self, b: OutBatch) -> Result<(), SinkError> {
        self.written = self.written.max(b.seq + 1);
        self.out.write_lines(&b)?;
        for line in b.iter_dead() {
            self.dead.write_line(line)?;
        }
        let m = &self.metrics;
        Metrics::add(&m.dead_letters_out, b.dead_len() as u64);
        self.summary.records += b.len() as u64;
        self.summary.bytes += b.bytes() as u64 + b.len() as u64;
        Metrics::add(&m.records_out, b.len() as u64);
        Metrics::add(&m.bytes_out, b.bytes() as u64 + b.len() as u64);
        self.unflushed.push((b.read_at, b.len() as u64));
        self.unflushed_since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Flush, then observe the latency of what was flushed (a reader can
    /// see it now) and publish how far the sink has written.
    fn flush(&mut self) -> Result<(), SinkError> {
        self.out.idle()?;
        self.dead.idle()?;
        let now = Instant::now();
        for (read_at, n) in self.unflushed.drain(..) {
            if let Some(t) = read_at {
                self.metrics.end_to_end.observe_n(now.saturating_duration_since(t), n);
            }
        }
        self.unflushed_since = None;
        self.confirmed.fetch_max(self.written, Ordering::Release);
        Ok(())
    }
}

/// What [`write_all_batches`] gives back.
pub(crate) struct Written {
    pub result: Result<SinkSummary, SinkError>,
    /// The sink's writer, to finish.
    pub out: Box<dyn LineSink + Send>,
    pub dead: DeadLetters,
}

/// The blocking sinks' loop: lend the writer to the workers (see the module
/// documentation), wait until they have gone or writing failed, then write
/// what is left in order and flush.
///
/// Lines are flushed when no batch is waiting, or when the oldest unflushed
/// one was written [`FLUSH_AFTER`] ago; the end-to-end latency of a batch is
/// observed when it is flushed (when a reader can see it), not when it
/// entered the buffer.
pub(crate) fn write_all_batches(
    input: &BatchRx,
    metrics: &Arc<Metrics>,
    out: Box<dyn LineSink + Send>,
    dead: DeadLetters,
    confirmed: &Arc<AtomicU64>,
) -> Written {
    let sh = &input.shared;
    let writer = Writer {
        out,
        dead,
        metrics: metrics.clone(),
        confirmed: confirmed.clone(),
        reorder: Reorder::default(),
        summary: SinkSummary::default(),
        written: 0,
        unflushed: Vec::new(),
        unflushed_since: None,
        failed: None,
    };
    *sh.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(writer);
    sh.lent.store(true, Ordering::Release);
    // What was sent before the writer was lent.
    sh.pump();
    {
        let (flag, cv) = &sh.gone;
        let mut gone = flag.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while !*gone && sh.senders.load(Ordering::Acquire) > 0 {
            let (g, waited) = cv.wait_timeout(gone, LOOK_EVERY).unwrap_or_else(std::sync::PoisonError::into_inner);
            gone = g;
            // A batch sent while its worker lost the race for the lock is
            // written by the holder; should that ever miss one, it waits
            // here at most this long, not until the next post.
            if waited.timed_out() && !sh.rx.is_empty() {
                drop(gone);
                sh.pump();
                gone = flag.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        }
    }
    sh.lent.store(false, Ordering::Release);
    let (taken, panicked) = match sh.writer.lock() {
        Ok(mut g) => (g.take(), false),
        Err(poisoned) => (poisoned.into_inner().take(), true),
    };
    let Some(mut w) = taken else {
        // Only this function takes the writer back.
        return Written {
            result: Err(SinkError::Task("the sink's writer was lost".into())),
            out: Box::new(super::LineWriter::new(std::io::sink(), "nothing")),
            dead: DeadLetters::none(),
        };
    };
    let result = match w.failed.take() {
        Some(e) => Err(e),
        // What it wrote half is not confirmed: nothing more is.
        None if panicked => Err(SinkError::Task("a worker panicked while writing".into())),
        None => finish_writing(&mut w, &input.rx),
    };
    Written { result, out: w.out, dead: w.dead }
}

/// Every sender has gone: the rest of the channel, then whatever still
/// waits for an earlier batch (only after a gap, which workers never leave).
fn finish_writing(w: &mut Writer, rx: &async_channel::Receiver<OutBatch>) -> Result<SinkSummary, SinkError> {
    w.drain(rx)?;
    for b in w.reorder.drain() {
        w.write(b)?;
    }
    w.flush()?;
    Ok(w.summary.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines into a shared buffer; fails from the `fail_at`-th write on.
    struct Memory {
        lines: Arc<Mutex<Vec<u8>>>,
        writes: usize,
        fail_at: usize,
        panic_at: usize,
    }

    impl LineSink for Memory {
        fn write_line(&mut self, line: &[u8]) -> Result<(), SinkError> {
            self.writes += 1;
            assert!(self.writes != self.panic_at, "a bug while writing");
            if self.writes >= self.fail_at {
                let source = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
                return Err(SinkError::Write { target: "memory".into(), source });
            }
            let mut l = self.lines.lock().expect("lines");
            l.extend_from_slice(line);
            l.push(b'\n');
            Ok(())
        }
        fn idle(&mut self) -> Result<(), SinkError> {
            Ok(())
        }
    }

    fn memory(fail_at: usize, panic_at: usize) -> (Box<dyn LineSink + Send>, Arc<Mutex<Vec<u8>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        (Box::new(Memory { lines: lines.clone(), writes: 0, fail_at, panic_at }), lines)
    }

    fn batch(seq: u64) -> OutBatch {
        let mut b = OutBatch::with_seq(seq);
        b.push(format!("{{\"seq\":{seq}}}").as_bytes(), "k");
        b
    }

    /// Four workers hand over batches out of order, racing for the writer,
    /// with the sink's thread starting late: every batch comes out once, in
    /// order, and the sink confirms all of them.
    #[test]
    fn racing_workers_write_every_batch_once_in_order() {
        const WORKERS: u64 = 4;
        const PER: u64 = 500;
        let (tx, rx) = channel(2);
        let (out, lines) = memory(usize::MAX, usize::MAX);
        let metrics = Arc::new(Metrics::default());
        let confirmed = Arc::new(AtomicU64::new(0));
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for i in 0..PER {
                        if i % 97 == w {
                            std::thread::sleep(std::time::Duration::from_micros(300));
                        }
                        tx.send_blocking(batch(i * WORKERS + w)).expect("sink takes it");
                    }
                })
            })
            .collect();
        drop(tx);
        std::thread::sleep(std::time::Duration::from_millis(5));
        let sink = {
            let (metrics, confirmed) = (metrics.clone(), confirmed.clone());
            std::thread::spawn(move || write_all_batches(&rx, &metrics, out, DeadLetters::none(), &confirmed).result)
        };
        for w in workers {
            w.join().expect("worker");
        }
        let summary = sink.join().expect("sink").expect("written");
        let n = WORKERS * PER;
        assert_eq!(summary.records, n);
        assert_eq!(confirmed.load(Ordering::Acquire), n);
        let text = String::from_utf8(lines.lock().expect("lines").clone()).expect("utf-8");
        let want: String = (0..n).map(|i| format!("{{\"seq\":{i}}}\n")).collect();
        assert!(text == want, "every batch once, in order ({} lines)", text.lines().count());
    }

    /// A failed write stops the workers (their next hand-off is refused)
    /// and the sink ends with that error; a panic while writing does the
    /// same instead of leaving the workers blocked.
    #[test]
    fn a_failed_or_panicking_write_stops_the_workers_and_the_sink_reports_it() {
        for (fail_at, panic_at, want) in [(10, usize::MAX, "cannot write to memory"), (usize::MAX, 10, "panicked")] {
            let (tx, rx) = channel(1);
            let (out, _) = memory(fail_at, panic_at);
            let metrics = Arc::new(Metrics::default());
            let confirmed = Arc::new(AtomicU64::new(0));
            let sink = {
                let (metrics, confirmed) = (metrics.clone(), confirmed.clone());
                std::thread::spawn(move || {
                    write_all_batches(&rx, &metrics, out, DeadLetters::none(), &confirmed).result
                })
            };
            let workers: Vec<_> = (0..3u64)
                .map(|w| {
                    let tx = tx.clone();
                    std::thread::spawn(move || {
                        let mut seq = w;
                        // A panic inside the writer unwinds this thread.
                        let sent = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            while tx.send_blocking(batch(seq)).is_ok() {
                                seq += 3;
                                assert!(seq < 100_000, "the workers were never stopped");
                            }
                        }));
                        drop(tx);
                        sent.is_ok()
                    })
                })
                .collect();
            drop(tx);
            for w in workers {
                w.join().expect("worker thread");
            }
            let err = sink.join().expect("sink").expect_err("the sink reports the failure");
            assert!(err.to_string().contains(want), "{err}");
            assert!(confirmed.load(Ordering::Acquire) < 10, "nothing past the failure is confirmed");
        }
    }
}
