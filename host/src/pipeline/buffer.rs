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
//! every new batch goes behind it, so order is kept.
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
use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::batch::RawBatch;
use crate::component::{BaseDir, Problems};
use crate::spool::{Fsync, Pos, Spool, SpoolError, SpoolRecord, spooled_size};
use crate::telemetry::Metrics;

/// `[buffer]`: the on-disk queue between the sources and the workers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    /// On or off; default: on when a source holds a live connection (X,
    /// Twitter v1.1, Jetstream, Mastodon), off for `replay`, `synthetic`
    /// and `kafka`, which can simply be read more slowly.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Where the queue lives; default `$XDG_STATE_HOME/traptor/buffer/<type>-<id>`
    /// (or `~/.local/state/…`). One collector per directory (locked).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Bytes the queue may hold (records waiting on disk) before `overflow` applies.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// What to do when the queue is full.
    #[serde(default)]
    pub overflow: BufferOverflow,
    /// Size of one segment file.
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// When appends are synced: `never` (default: a process crash loses
    /// nothing, the OS writes the pages back), `batch`, `always`.
    #[serde(default = "default_fsync")]
    pub fsync: Fsync,
    /// How long to wait for the directory's lock when another collector
    /// holds it (a killed predecessor still exiting, a supervisor's
    /// restart) before refusing to start; 0 = refuse at once.
    #[serde(default = "default_lock_wait_secs")]
    pub lock_wait_secs: u64,
}

fn default_lock_wait_secs() -> u64 {
    10
}

fn default_max_bytes() -> u64 {
    10 << 30
}
fn default_segment_bytes() -> u64 {
    64 << 20
}
fn default_fsync() -> Fsync {
    Fsync::Never
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            enabled: None,
            dir: None,
            max_bytes: default_max_bytes(),
            overflow: BufferOverflow::default(),
            segment_bytes: default_segment_bytes(),
            fsync: default_fsync(),
            lock_wait_secs: default_lock_wait_secs(),
        }
    }
}

/// What to do when the disk queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BufferOverflow {
    /// Forget the oldest queued records to make room.
    #[default]
    DropOldest,
    /// Refuse the new records.
    DropNewest,
    /// Stop reading the sources until there is room.
    Block,
}

impl BufferOverflow {
    pub fn as_str(self) -> &'static str {
        match self {
            BufferOverflow::DropOldest => "drop_oldest",
            BufferOverflow::DropNewest => "drop_newest",
            BufferOverflow::Block => "block",
        }
    }
}

impl BufferConfig {
    /// Pure checks; keys relative to `[buffer]`.
    pub fn check(&self, p: &mut Problems<'_>) {
        p.range("max_bytes", self.max_bytes, 1 << 10, 1 << 50);
        p.range("segment_bytes", self.segment_bytes, 1 << 10, 1 << 32);
        p.range("lock_wait_secs", self.lock_wait_secs, 0, 3600);
    }

    pub fn resolve_paths(&mut self, base: &BaseDir) {
        if let Some(d) = &mut self.dir {
            base.fix(d);
        }
    }

    /// On for this pipeline? (`live`: a source holds a live connection.)
    pub fn is_on(&self, live: bool) -> bool {
        self.enabled.unwrap_or(live)
    }

    /// The queue's directory: the configured one, else
    /// `$XDG_STATE_HOME/traptor/buffer/<type>-<id>` (or `~/.local/state/…`).
    pub fn dir_for(&self, who: crate::rules::Collector) -> Option<PathBuf> {
        self.dir.clone().or_else(|| {
            Some(crate::component::state_dir()?.join("buffer").join(format!("{}-{}", who.rule_type, who.id)))
        })
    }
}

/// Take the directory's lock (`<dir>/lock`, an advisory `flock` the kernel
/// drops when its holder's files close), waiting up to `wait` for a holder
/// to let go: a collector killed a moment ago holds it until its process has
/// finished exiting, which a restart (a supervisor's, a test's) can beat.
/// The holder writes who it is into the file, so a refusal can say.
fn lock_dir(dir: &Path, wait: Duration) -> Result<File, BufferError> {
    let lock_path = dir.join("lock");
    let io_err = |source| BufferError::Lock { dir: dir.to_owned(), lock: lock_path.clone(), source };
    let mut lock =
        File::options().create(true).truncate(false).read(true).write(true).open(&lock_path).map_err(io_err)?;
    let started = Instant::now();
    let mut warned = false;
    loop {
        match lock.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&lock_path).unwrap_or_default();
                let holder =
                    if holder.trim().is_empty() { "holder unknown".to_owned() } else { holder.trim().to_owned() };
                if started.elapsed() >= wait {
                    return Err(BufferError::Locked {
                        dir: dir.to_owned(),
                        lock: lock_path,
                        holder,
                        waited_secs: wait.as_secs(),
                    });
                }
                if !warned {
                    warned = true;
                    tracing::warn!(dir = %dir.display(), %holder, wait_secs = wait.as_secs(), "buffer directory locked by another collector; waiting for it to exit");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::Error(source)) => return Err(io_err(source)),
        }
    }
    if warned {
        tracing::info!(dir = %dir.display(), waited_ms = started.elapsed().as_millis() as u64, "buffer directory lock taken");
    }
    // Who holds it now, for whoever finds it held.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let me = format!("pid {} on {} since {since} (unix time)\n", std::process::id(), host.trim());
    let written = lock.set_len(0).and_then(|()| {
        use std::io::{Seek, Write};
        lock.seek(std::io::SeekFrom::Start(0))?;
        lock.write_all(me.as_bytes())
    });
    if let Err(e) = written {
        tracing::debug!(error = %e, "could not note the buffer lock's holder");
    }
    Ok(lock)
}

/// Why the buffer failed.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("buffer {dir}: {source}")]
    Spool {
        dir: PathBuf,
        #[source]
        source: SpoolError,
    },
    #[error(
        "buffer {dir} is in use by another collector ({holder}; its lock file {lock} was still held after {waited_secs} s); give each collector its own [buffer] dir"
    )]
    Locked { dir: PathBuf, lock: PathBuf, holder: String, waited_secs: u64 },
    #[error("buffer {dir}: cannot lock {lock}: {source}")]
    Lock {
        dir: PathBuf,
        lock: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("buffer: no directory for the queue (set [buffer] dir, or HOME / XDG_STATE_HOME)")]
    NoDir,
    #[error("buffer: the workers stopped taking batches")]
    WorkersGone,
    /// The buffer's task failed (a bug, or the runtime going away).
    #[error("buffer task failed: {0}")]
    Task(String),
}

impl BufferError {
    /// Errors a user fixes in the configuration.
    pub fn is_user_error(&self) -> bool {
        matches!(self, BufferError::Locked { .. } | BufferError::NoDir)
    }
}

/// Key of a record frame: source, origin, read time.
const KEY_LEN: usize = 2 + 8 + 8;
/// Records read per disk batch when looking for the oldest time or skipping.
const SKIP_CHUNK: usize = 256;

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// The `Instant` of a wall-clock time in µs (for the end-to-end latency).
fn instant_of(us: u64) -> Instant {
    let ago = Duration::from_micros(now_us().saturating_sub(us));
    Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
}

fn frame_key(source: u16, origin: u64, read_us: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(KEY_LEN);
    k.extend_from_slice(&source.to_le_bytes());
    k.extend_from_slice(&origin.to_le_bytes());
    k.extend_from_slice(&read_us.to_le_bytes());
    k
}

fn parse_key(k: &[u8]) -> Option<(u16, u64, u64)> {
    Some((
        u16::from_le_bytes(k.get(0..2)?.try_into().ok()?),
        u64::from_le_bytes(k.get(2..10)?.try_into().ok()?),
        u64::from_le_bytes(k.get(10..18)?.try_into().ok()?),
    ))
}

fn checkpoint_of(r: &SpoolRecord) -> Option<u64> {
    r.headers.iter().find(|(k, _)| k == "c").and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok())
}

/// What became of a batch offered to the disk queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// Stored; `dropped` oldest records were forgotten to make room.
    Stored { dropped: Option<Dropped> },
    /// Refused (`drop_newest`, or bigger than the whole queue): its records are lost.
    Refused { records: u64 },
    /// No room (`block`): offer it again later.
    Full,
}

/// Records forgotten from the head of the queue, to acknowledge in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub end: Pos,
    pub records: u64,
    pub bytes: u64,
}

/// Records read back from disk, one source's, in order.
#[derive(Debug)]
pub struct DiskBatch {
    pub batch: RawBatch,
    /// Where the last of them ends (acknowledge up to here once written).
    pub end: Pos,
    pub records: u64,
    pub bytes: u64,
}

/// The on-disk queue: a [`Spool`] with a read cursor ahead of its head
/// (records between head and cursor are with the workers or the sink).
#[derive(Debug)]
pub struct DiskQueue {
    spool: Spool,
    dir: PathBuf,
    /// Held while the queue is open: one collector per directory.
    _lock: File,
    read: Pos,
    queued_records: u64,
    queued_bytes: u64,
    /// Read time (µs) of the record at the cursor, if any is queued.
    oldest_us: Option<u64>,
    max_bytes: u64,
    overflow: BufferOverflow,
}

impl DiskQueue {
    /// Open (or create) the queue in `dir`: what a previous run left is
    /// queued again, ahead of anything new.
    pub fn open(dir: &Path, cfg: &BufferConfig) -> Result<DiskQueue, BufferError> {
        let spool_err = |source| BufferError::Spool { dir: dir.to_owned(), source };
        std::fs::create_dir_all(dir).map_err(|source| spool_err(SpoolError::Io { path: dir.to_owned(), source }))?;
        let lock = lock_dir(dir, Duration::from_secs(cfg.lock_wait_secs))?;
        // The cap is this queue's own (on queued records); the spool's is off.
        let spool = Spool::open(dir, cfg.segment_bytes, u64::MAX, cfg.fsync).map_err(spool_err)?;
        let mut q = DiskQueue {
            read: spool.head(),
            queued_records: spool.len(),
            queued_bytes: spool.bytes(),
            spool,
            dir: dir.to_owned(),
            _lock: lock,
            oldest_us: None,
            max_bytes: cfg.max_bytes,
            overflow: cfg.overflow,
        };
        q.refresh_oldest()?;
        Ok(q)
    }

    fn err(&self, source: SpoolError) -> BufferError {
        BufferError::Spool { dir: self.dir.clone(), source }
    }

    /// Records and bytes waiting on disk (not yet with the workers).
    pub fn queued(&self) -> (u64, u64) {
        (self.queued_records, self.queued_bytes)
    }

    /// Records and bytes on disk: queued, and read back but not yet written.
    pub fn held(&self) -> (u64, u64) {
        (self.spool.len(), self.spool.bytes())
    }

    /// Read time (µs since the epoch) of the oldest queued record.
    pub fn oldest_us(&self) -> Option<u64> {
        self.oldest_us
    }

    fn refresh_oldest(&mut self) -> Result<(), BufferError> {
        self.oldest_us = if self.queued_records == 0 {
            None
        } else {
            let first = self.spool.peek_from(self.read, 1).map_err(|e| self.err(e))?;
            first.first().and_then(|(_, r)| parse_key(&r.key)).map(|(_, _, t)| t)
        };
        Ok(())
    }

    /// Offer a batch (its records keep their source, origin and read time).
    pub fn push(&mut self, b: &RawBatch) -> Result<Pushed, BufferError> {
        let read_us = b.read_at.map_or_else(now_us, |t| now_us().saturating_sub(t.elapsed().as_micros() as u64));
        let n = b.len();
        let records: Vec<SpoolRecord> = b
            .iter()
            .enumerate()
            .map(|(i, (r, origin))| SpoolRecord {
                key: frame_key(b.source, origin, read_us),
                value: r.to_vec(),
                headers: match b.checkpoint {
                    // Decimal: header values are NUL-terminated.
                    Some(c) if i + 1 == n => vec![("c".to_owned(), c.to_string().into_bytes())],
                    _ => Vec::new(),
                },
            })
            .collect();
        let size: u64 = records.iter().map(spooled_size).sum();
        let mut dropped = None;
        if self.queued_bytes + size > self.max_bytes {
            match self.overflow {
                BufferOverflow::Block if size <= self.max_bytes => return Ok(Pushed::Full),
                BufferOverflow::DropOldest if size <= self.max_bytes => {
                    dropped = Some(self.skip_oldest(self.queued_bytes + size - self.max_bytes)?);
                }
                _ => return Ok(Pushed::Refused { records: n as u64 }),
            }
        }
        self.spool.append(&records).map_err(|e| self.err(e))?;
        if self.queued_records == 0 {
            self.oldest_us = Some(read_us);
        }
        self.queued_records += n as u64;
        self.queued_bytes += size;
        Ok(Pushed::Stored { dropped })
    }

    /// Move the cursor past the oldest queued records until `need` bytes
    /// are freed (or nothing is queued).
    fn skip_oldest(&mut self, need: u64) -> Result<Dropped, BufferError> {
        let mut d = Dropped { end: self.read, records: 0, bytes: 0 };
        while d.bytes < need && self.queued_records > 0 {
            let chunk = self.spool.peek_from(self.read, SKIP_CHUNK).map_err(|e| self.err(e))?;
            if chunk.is_empty() {
                break;
            }
            for (pos, r) in chunk {
                let size = spooled_size(&r);
                d.end = pos;
                d.records += 1;
                d.bytes += size;
                self.read = pos;
                self.queued_records -= 1;
                self.queued_bytes = self.queued_bytes.saturating_sub(size);
                if d.bytes >= need {
                    break;
                }
            }
        }
        self.refresh_oldest()?;
        Ok(d)
    }

    /// Up to `max` queued records, all of one source, for the workers.
    pub fn pop(&mut self, max: usize) -> Result<Option<DiskBatch>, BufferError> {
        if self.queued_records == 0 {
            return Ok(None);
        }
        let recs = self.spool.peek_from(self.read, max).map_err(|e| self.err(e))?;
        let mut batch = RawBatch::default();
        let (mut end, mut records, mut bytes) = (self.read, 0u64, 0u64);
        let mut first_read = None;
        for (pos, r) in &recs {
            let Some((source, origin, read_us)) = parse_key(&r.key) else {
                // A frame with a bad key passed its checksum: not ours; skip it.
                tracing::error!(buffer = %self.dir.display(), "buffer: a record without a valid key skipped");
                end = *pos;
                records += 1;
                bytes += spooled_size(r);
                continue;
            };
            if records > 0 && first_read.is_some() && source != batch.source {
                break;
            }
            if first_read.is_none() {
                batch.source = source;
                first_read = Some(read_us);
            }
            batch.push(&r.value, origin);
            if let Some(c) = checkpoint_of(r) {
                batch.checkpoint = Some(batch.checkpoint.map_or(c, |p| p.max(c)));
            }
            end = *pos;
            records += 1;
            bytes += spooled_size(r);
        }
        if records == 0 {
            // The queue counts records the files no longer hold (cut by a crash).
            self.queued_records = 0;
            self.queued_bytes = 0;
            self.oldest_us = None;
            return Ok(None);
        }
        batch.read_at = first_read.map(instant_of);
        self.read = end;
        self.queued_records = self.queued_records.saturating_sub(records);
        self.queued_bytes = self.queued_bytes.saturating_sub(bytes);
        self.refresh_oldest()?;
        Ok(Some(DiskBatch { batch, end, records, bytes }))
    }

    /// Records up to `end` are written by the sink (or dropped): remove them.
    pub fn ack(&mut self, end: Pos, records: u64, bytes: u64) -> Result<(), BufferError> {
        self.spool.ack(end, records, bytes).map_err(|e| self.err(e))?;
        self.read = self.read.max(self.spool.head());
        Ok(())
    }
}

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
        let mut input_open = true;
        let mut announced = false;
        loop {
            settle(&mut self.queue, &mut inflight, &self.written, &self.checkpoints, self.dedup.as_deref())?;
            if let Some(b) = held.take() {
                held = self.spill(b, &mut inflight)?;
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
            if !input_open && sending.is_none() && held.is_none() && queued == 0 {
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
                        } else {
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
mod tests {
    use super::*;

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
}
