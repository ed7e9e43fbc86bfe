//! The buffer's disk queue and its configuration: batches the workers had
//! no room for, in the spool's record format (see [`super::buffer`] for how
//! the merge step uses it).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::batch::RawBatch;
use crate::component::{BaseDir, Problems};
use crate::spool::{Fsync, Pos, Spool, SpoolError, SpoolRecord, spooled_size};

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
pub(super) fn lock_dir(dir: &Path, wait: Duration) -> Result<File, BufferError> {
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
pub(super) const KEY_LEN: usize = 2 + 8 + 8;
/// Records read per disk batch when looking for the oldest time or skipping.
pub(super) const SKIP_CHUNK: usize = 256;

pub(super) fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// The `Instant` of a wall-clock time in µs (for the end-to-end latency).
pub(super) fn instant_of(us: u64) -> Instant {
    let ago = Duration::from_micros(now_us().saturating_sub(us));
    Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
}

pub(super) fn frame_key(source: u16, origin: u64, read_us: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(KEY_LEN);
    k.extend_from_slice(&source.to_le_bytes());
    k.extend_from_slice(&origin.to_le_bytes());
    k.extend_from_slice(&read_us.to_le_bytes());
    k
}

pub(super) fn parse_key(k: &[u8]) -> Option<(u16, u64, u64)> {
    Some((
        u16::from_le_bytes(k.get(0..2)?.try_into().ok()?),
        u64::from_le_bytes(k.get(2..10)?.try_into().ok()?),
        u64::from_le_bytes(k.get(10..18)?.try_into().ok()?),
    ))
}

pub(super) fn checkpoint_of(r: &SpoolRecord) -> Option<u64> {
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
    pub(super) max_bytes: u64,
    overflow: BufferOverflow,
    /// This run's source index → the index records carry on disk (empty:
    /// the same), and back (`None`: a source no longer in the pipeline).
    to_disk: Vec<u16>,
    from_disk: Vec<Option<u16>>,
    /// Names of sources gone from the pipeline whose records were read back.
    orphans_seen: std::collections::BTreeSet<u16>,
}

/// The file naming the sources behind the indices records carry on disk.
const SOURCES_FILE: &str = "sources.json";

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
            to_disk: Vec::new(),
            from_disk: Vec::new(),
            orphans_seen: Default::default(),
        };
        q.refresh_oldest()?;
        Ok(q)
    }

    /// Key the records on disk by source *name* (`sources.json` in the
    /// directory), so a reordered `[[sources]]` list reads its records back
    /// as the sources that wrote them. A directory from before this file
    /// took the order it was written in.
    pub fn with_sources(mut self, labels: &[String]) -> Result<DiskQueue, BufferError> {
        let path = self.dir.join(SOURCES_FILE);
        let io = |source: std::io::Error| BufferError::Spool {
            dir: self.dir.clone(),
            source: SpoolError::Io { path: path.clone(), source },
        };
        let mut table: Vec<String> = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                io(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not a list of source names: {e}")))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(e)),
        };
        if table.is_empty() {
            table = labels.to_vec();
        }
        for l in labels {
            if !table.contains(l) {
                table.push(l.clone());
            }
        }
        if table.len() > usize::from(u16::MAX) {
            // Renumbering would give records on disk to the wrong sources.
            return Err(io(std::io::Error::other(format!(
                "{} source names over time, more than 65535; empty the buffer and remove the file",
                table.len()
            ))));
        }
        let text = serde_json::to_vec(&table).unwrap_or_default();
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &path)).map_err(io)?;
        self.to_disk = labels.iter().map(|l| table.iter().position(|t| t == l).unwrap_or(0) as u16).collect();
        self.from_disk = table.iter().map(|t| labels.iter().position(|l| l == t).map(|i| i as u16)).collect();
        for (j, name) in table.iter().enumerate() {
            if self.from_disk[j].is_none() {
                tracing::debug!(source = %name, disk_index = j, "buffer: a source no longer in the pipeline");
            }
        }
        self.orphans_seen.clear();
        Ok(self)
    }

    /// The index a source's records carry on disk.
    fn disk_index(&self, source: u16) -> u16 {
        self.to_disk.get(usize::from(source)).copied().unwrap_or(source)
    }

    /// This run's index of records carrying `disk` (`None`: their source is gone).
    fn run_index(&mut self, disk: u16) -> Option<u16> {
        if self.from_disk.is_empty() {
            return Some(disk);
        }
        let found = self.from_disk.get(usize::from(disk)).copied().flatten();
        if found.is_none() && self.orphans_seen.insert(disk) {
            tracing::warn!(
                buffer = %self.dir.display(),
                disk_index = disk,
                "buffered records of a source no longer in the pipeline: written as the first source's, \
                 their cursor not confirmed"
            );
        }
        found
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
        let disk_source = self.disk_index(b.source);
        let records: Vec<SpoolRecord> = b
            .iter()
            .enumerate()
            .map(|(i, (r, origin))| SpoolRecord {
                key: frame_key(disk_source, origin, read_us),
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
        let (mut disk_source, mut known) = (0u16, None);
        for (pos, r) in &recs {
            let Some((source, origin, read_us)) = parse_key(&r.key) else {
                // A frame with a bad key passed its checksum: not ours; skip it.
                tracing::error!(buffer = %self.dir.display(), "buffer: a record without a valid key skipped");
                end = *pos;
                records += 1;
                bytes += spooled_size(r);
                continue;
            };
            if records > 0 && first_read.is_some() && source != disk_source {
                break;
            }
            if first_read.is_none() {
                disk_source = source;
                known = self.run_index(source);
                batch.source = known.unwrap_or(0);
                first_read = Some(read_us);
            }
            batch.push(&r.value, origin);
            if let Some(c) = checkpoint_of(r).filter(|_| known.is_some()) {
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
