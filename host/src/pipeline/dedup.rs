//! `[dedup]`: drop a post seen before — across sources, reconnects,
//! restarts and, with `redis`, collectors (issue 12, point 3).
//!
//! A post is keyed by its network and id (`twitter-v1`/`x-v2`/`bluesky`/
//! `mastodon` + id), hashed to 64 bits (XXH3; a collision among 10 million
//! ids has odds of about 3 in a million). An id is remembered `ttl_secs`
//! and at most `max_ids` of them (the oldest forgotten first), in shards
//! shared by every worker. The ids are written to a snapshot file every
//! 30 s and when the run ends, and read back at start (expired ones
//! skipped), so a restart does not let through what was already written.
//! Duplicates are dropped before matching and counted (`duplicates`).
//!
//! With the buffer between sources and workers (whose records a restart
//! replays until the sink has written them), an id counts as seen for the
//! next run only once its post is written: the ids of each batch wait here
//! until the sink confirms the batch, then go to a journal beside the
//! snapshot (`<snapshot>.journal`, 12 bytes an id, emptied by every
//! snapshot); a snapshot leaves out the ids still waiting. So a crash
//! neither drops a replayed post that was never written (as a duplicate of
//! itself) nor writes again one that was.
//!
//! With `redis`, every collector naming the same server and `key_prefix`
//! shares the ids: after the local check, each batch's new ids are claimed
//! in one pipelined round trip of `SET <prefix>:<network>:<id> 1 NX EX ttl`;
//! an id another collector claimed first is a duplicate. While Redis cannot
//! be reached the local check goes on alone (each failure counted as
//! `dedup_redis_errors`; a new connection is tried at most every 5 s).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::component::{BaseDir, Problems};

/// `[dedup]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    /// An id is remembered this long …
    #[serde(default = "default_ttl")]
    pub ttl_secs: u64,
    /// … and at most this many ids (the oldest forgotten first).
    #[serde(default = "default_max_ids")]
    pub max_ids: usize,
    /// Where the ids are kept across restarts (default: under the user's
    /// state directory, one file per collector type and id).
    #[serde(default)]
    pub snapshot: Option<PathBuf>,
    /// Share the ids with every collector using this Redis server.
    #[serde(default)]
    pub redis: Option<String>,
    /// Key prefix of the shared ids.
    #[serde(default = "default_prefix")]
    pub key_prefix: String,
    /// With `redis`: how long a claim holds before the sink has written its
    /// post. It becomes `ttl_secs` long once the sink confirms the post; a
    /// collector that dies in between loses its claim after this, and a
    /// standby's backfill writes the post.
    #[serde(default = "default_claim_secs")]
    pub claim_secs: u64,
}

fn default_claim_secs() -> u64 {
    5
}

fn default_prefix() -> String {
    "traptor-dedup".into()
}

fn default_ttl() -> u64 {
    3600
}
fn default_max_ids() -> usize {
    10_000_000
}

impl DedupConfig {
    pub fn check(&self, p: &mut Problems<'_>) {
        p.range("ttl_secs", self.ttl_secs, 1, 30 * 86_400);
        p.range("max_ids", self.max_ids as u64, 1, 200_000_000);
        p.range("claim_secs", self.claim_secs, 1, self.ttl_secs.max(1));
        if self.key_prefix.is_empty() || self.key_prefix.contains(char::is_whitespace) {
            p.add("key_prefix", format!("{:?} must be non-empty, without spaces", self.key_prefix));
        }
        if let Some(u) = &self.redis
            && !["redis://", "rediss://", "redis+unix://", "unix://"].iter().any(|s| u.starts_with(s))
        {
            p.add("redis", "expected a redis:// or rediss:// URL");
        }
    }

    pub fn resolve_paths(&mut self, base: &BaseDir) {
        if let Some(s) = &mut self.snapshot {
            base.fix(s);
        }
    }

    /// The snapshot file: the configured one, else
    /// `$XDG_STATE_HOME/traptor/dedup-<type>-<id>.bin` (or `~/.local/state/…`).
    pub fn snapshot_path(&self, who: crate::rules::Collector) -> Option<PathBuf> {
        self.snapshot
            .clone()
            .or_else(|| Some(crate::component::state_dir()?.join(format!("dedup-{}-{}.bin", who.rule_type, who.id))))
    }
}

/// Why the snapshot could not be used or written.
#[derive(Debug, thiserror::Error)]
pub enum DedupError {
    #[error("dedup snapshot {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("dedup snapshot {path} is not a snapshot of this version (it starts with {found:?})")]
    Format { path: PathBuf, found: String },
}

const MAGIC: &[u8; 8] = b"TRPTDD01";
const SHARDS: usize = 16;

#[derive(Debug, Default)]
struct Shard {
    /// Key → when it was last let through (unix seconds).
    seen: hashbrown::HashMap<u64, u32>,
    /// Keys in the order they were let through; an entry whose time no
    /// longer matches `seen` is stale and skipped.
    order: VecDeque<(u64, u32)>,
}

impl Shard {
    fn forget_old(&mut self, now: u32, ttl: u32, max: usize) {
        while let Some(&(k, t)) = self.order.front() {
            let expired = t.saturating_add(ttl) <= now;
            let stale = self.seen.get(&k) != Some(&t);
            if !(expired || stale || self.seen.len() > max) {
                break;
            }
            self.order.pop_front();
            if !stale {
                self.seen.remove(&k);
            }
        }
    }
}

/// The ids seen, shared by every worker.
#[derive(Debug)]
pub struct Dedup {
    shards: Vec<Mutex<Shard>>,
    ttl: u32,
    max_per_shard: usize,
    snapshot: Option<PathBuf>,
    shared: Option<Arc<Shared>>,
    /// With the buffer: ids wait for their batch to be written.
    journal: Option<Mutex<Journal>>,
}

/// Ids let through, by batch, until the sink has written the batch; then
/// appended to the journal file.
#[derive(Debug)]
struct Journal {
    path: PathBuf,
    file: std::fs::File,
    pending: std::collections::BTreeMap<u64, Vec<u64>>,
}

/// The journal beside a snapshot.
fn journal_path(snapshot: &Path) -> PathBuf {
    let mut p = snapshot.as_os_str().to_owned();
    p.push(".journal");
    PathBuf::from(p)
}

/// The Redis side: a connection made on first use and again after a failure.
struct Shared {
    url: crate::redis_conn::RedisUrl,
    prefix: String,
    conn: tokio::sync::Mutex<Option<redis::aio::ConnectionManager>>,
    /// No new connection attempt before this.
    retry_at: Mutex<std::time::Instant>,
    /// Seconds a claim holds until the sink confirms its post.
    claim_secs: u64,
    /// Keys claimed per batch, made durable (`ttl_secs`) once it is written.
    claimed: Mutex<std::collections::BTreeMap<u64, Vec<String>>>,
    /// The tasks writing confirmations (awaited at the end of the run).
    confirming: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("url", &self.url).field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

/// Why the shared claim failed (the local answer stands).
#[derive(Debug, thiserror::Error)]
#[error("dedup in Redis at {url}: {message}")]
pub struct SharedError {
    url: String,
    message: String,
}

fn now_secs() -> u32 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

/// The 64-bit key of a post.
pub fn key(network: &str, id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(id.as_bytes(), xxhash_rust::xxh3::xxh3_64(network.as_bytes()))
}

impl Dedup {
    /// An empty store, or the one in `snapshot` (expired ids skipped). An
    /// unreadable or foreign snapshot is an error: nothing would be
    /// deduplicated against it, and the user should know.
    pub fn open(cfg: &DedupConfig, snapshot: Option<PathBuf>) -> Result<Dedup, DedupError> {
        Dedup::open_with(cfg, snapshot, false)
    }

    /// [`Dedup::open`]; with `journal` (the buffer is on), ids are kept for
    /// the next run only once their batch is written ([`Dedup::stage`],
    /// [`Dedup::commit`]). A journal left by an earlier run is read back
    /// either way.
    pub fn open_with(cfg: &DedupConfig, snapshot: Option<PathBuf>, journal: bool) -> Result<Dedup, DedupError> {
        let ttl = u32::try_from(cfg.ttl_secs).unwrap_or(u32::MAX);
        let max_per_shard = cfg.max_ids.div_ceil(SHARDS).max(1);
        let shared = cfg.redis.as_ref().map(|u| {
            Arc::new(Shared {
                url: crate::redis_conn::RedisUrl::new(u.clone()),
                prefix: cfg.key_prefix.clone(),
                conn: tokio::sync::Mutex::new(None),
                retry_at: Mutex::new(std::time::Instant::now()),
                claim_secs: cfg.claim_secs,
                claimed: Mutex::default(),
                confirming: Mutex::default(),
            })
        });
        let mut d = Dedup {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            ttl,
            max_per_shard,
            snapshot,
            shared,
            journal: None,
        };
        if let Some(path) = d.snapshot.clone() {
            d.load(&path)?;
            let jpath = journal_path(&path);
            d.load_journal(&jpath)?;
            if journal {
                let err = |source| DedupError::Io { path: jpath.clone(), source };
                if let Some(dir) = jpath.parent() {
                    std::fs::create_dir_all(dir).map_err(err)?;
                }
                let file = std::fs::OpenOptions::new().create(true).append(true).open(&jpath).map_err(err)?;
                d.journal = Some(Mutex::new(Journal { path: jpath, file, pending: Default::default() }));
            }
        }
        Ok(d)
    }

    /// Ids of posts written after the last snapshot (a torn last entry is ignored).
    fn load_journal(&self, path: &Path) -> Result<(), DedupError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(DedupError::Io { path: path.to_owned(), source }),
        };
        let now = now_secs();
        let n = self.insert_all(&bytes, now);
        if n > 0 {
            tracing::info!(file = %path.display(), ids = n, "dedup ids read back from the journal");
        }
        Ok(())
    }

    /// Insert 12-byte `(key, time)` records that have not expired; how many.
    fn insert_all(&self, records: &[u8], now: u32) -> usize {
        let mut n = 0;
        for rec in records.chunks_exact(12) {
            let k = u64::from_le_bytes(rec[..8].try_into().unwrap_or_default());
            let t = u32::from_le_bytes(rec[8..].try_into().unwrap_or_default());
            if t.saturating_add(self.ttl) > now {
                self.insert(k, t, now);
                n += 1;
            }
        }
        n
    }

    /// Whether ids wait for their batch to be written ([`Dedup::stage`]).
    pub fn journals(&self) -> bool {
        self.journal.is_some()
    }

    /// The keys let through in batch `seq` (its posts not yet written).
    pub fn stage(&self, seq: u64, keys: Vec<u64>) {
        if let Some(j) = &self.journal
            && !keys.is_empty()
            && let Ok(mut j) = j.lock()
        {
            j.pending.insert(seq, keys);
        }
    }

    /// Batches below `upto` are written: their shared claims are made
    /// durable, their ids go to the journal.
    pub fn commit(&self, upto: u64) -> Result<(), DedupError> {
        if let Some(s) = &self.shared {
            self.confirm_claims(s, upto);
        }
        let Some(j) = &self.journal else { return Ok(()) };
        let Ok(mut j) = j.lock() else { return Ok(()) };
        let now = now_secs();
        let mut out = Vec::new();
        while let Some(entry) = j.pending.first_entry() {
            if *entry.key() >= upto {
                break;
            }
            for k in entry.remove() {
                out.extend_from_slice(&k.to_le_bytes());
                out.extend_from_slice(&now.to_le_bytes());
            }
        }
        if out.is_empty() {
            return Ok(());
        }
        let path = j.path.clone();
        j.file.write_all(&out).map_err(|source| DedupError::Io { path, source })
    }

    fn load(&self, path: &Path) -> Result<(), DedupError> {
        let err = |source| DedupError::Io { path: path.to_owned(), source };
        let mut bytes = Vec::new();
        match std::fs::File::open(path) {
            Ok(mut f) => f.read_to_end(&mut bytes).map_err(err)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(err(e)),
        };
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            let found = String::from_utf8_lossy(&bytes[..bytes.len().min(8)]).into_owned();
            return Err(DedupError::Format { path: path.to_owned(), found });
        }
        let now = now_secs();
        let n = self.insert_all(&bytes[MAGIC.len()..], now);
        tracing::info!(file = %path.display(), ids = n, "dedup ids read back");
        Ok(())
    }

    fn insert(&self, k: u64, t: u32, now: u32) {
        if let Ok(mut s) = self.shards[(k as usize) % SHARDS].lock() {
            s.seen.insert(k, t);
            s.order.push_back((k, t));
            s.forget_old(now, self.ttl, self.max_per_shard);
        }
    }

    /// True the first time `network`/`id` is seen within the window (the
    /// post goes on); false for a duplicate.
    pub fn first(&self, network: &str, id: &str) -> bool {
        self.first_key(key(network, id))
    }

    /// [`Dedup::first`] for a key already made with [`key`].
    pub fn first_key(&self, k: u64) -> bool {
        let now = now_secs();
        let Ok(mut s) = self.shards[(k as usize) % SHARDS].lock() else { return true };
        // An expired entry reads as absent here; forgetting is done once, after inserting.
        if s.seen.get(&k).is_some_and(|&t| t.saturating_add(self.ttl) > now) {
            return false;
        }
        s.seen.insert(k, now);
        s.order.push_back((k, now));
        s.forget_old(now, self.ttl, self.max_per_shard);
        true
    }

    /// Give the claims of batches below `upto` the full TTL, in the
    /// background (a claim whose post is written stays for `ttl_secs`).
    fn confirm_claims(&self, s: &Arc<Shared>, upto: u64) {
        let keys: Vec<String> = {
            let Ok(mut claimed) = s.claimed.lock() else { return };
            let rest = claimed.split_off(&upto);
            std::mem::replace(&mut *claimed, rest).into_values().flatten().collect()
        };
        let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
        if keys.is_empty() {
            return;
        }
        let (shared, ttl) = (s.clone(), self.ttl);
        let task = handle.spawn(async move {
            let mut guard = shared.conn.lock().await;
            let Some(conn) = guard.as_mut() else {
                tracing::warn!(ids = keys.len(), "dedup: not connected to Redis; written ids not confirmed (their claims expire)");
                return;
            };
            let mut pipe = redis::pipe();
            for k in &keys {
                pipe.cmd("SET").arg(k).arg(1).arg("EX").arg(ttl).ignore();
            }
            if let Err(e) = pipe.query_async::<()>(conn).await {
                tracing::warn!(error = %e, ids = keys.len(), "dedup: cannot confirm written ids in Redis; their claims expire");
            }
        });
        if let Ok(mut tasks) = s.confirming.lock() {
            tasks.retain(|t| !t.is_finished());
            tasks.push(task);
        }
    }

    /// Wait for the confirmations under way (end of the run).
    pub async fn confirmations_written(&self) {
        let Some(s) = &self.shared else { return };
        let tasks = s.confirming.lock().map(|mut t| std::mem::take(&mut *t)).unwrap_or_default();
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Whether ids are shared through Redis.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Claim `ids` (network, id) of batch `seq` for this collector in
    /// Redis, one round trip: true where this collector is the first, false
    /// where another one claimed it. A claim holds `claim_secs` until the
    /// batch is written ([`Dedup::commit`]), then `ttl_secs`. Call from a
    /// blocking thread.
    pub fn claim(&self, seq: u64, ids: &[(&str, &str)]) -> Result<Vec<bool>, SharedError> {
        let Some(s) = &self.shared else { return Ok(vec![true; ids.len()]) };
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let err = |message: String| SharedError { url: s.url.to_string(), message };
        let handle = tokio::runtime::Handle::try_current().map_err(|e| err(e.to_string()))?;
        handle.block_on(async {
            let mut guard = s.conn.lock().await;
            if guard.is_none() {
                {
                    let mut at = s.retry_at.lock().map_err(|_| err("lock poisoned".into()))?;
                    if std::time::Instant::now() < *at {
                        return Err(err("not connected (retrying every 5 s)".into()));
                    }
                    *at = std::time::Instant::now() + std::time::Duration::from_secs(5);
                }
                *guard = Some(crate::redis_conn::connect(&s.url, None).await.map_err(|e| err(e.to_string()))?);
            }
            let Some(conn) = guard.as_mut() else { return Err(err("not connected".into())) };
            let keys: Vec<String> = ids.iter().map(|(network, id)| format!("{}:{network}:{id}", s.prefix)).collect();
            let mut pipe = redis::pipe();
            for k in &keys {
                pipe.cmd("SET").arg(k).arg(1).arg("NX").arg("EX").arg(s.claim_secs);
            }
            let replies: Vec<Option<String>> = pipe.query_async(conn).await.map_err(|e| err(e.to_string()))?;
            let first: Vec<bool> = replies.iter().map(Option::is_some).collect();
            let mine: Vec<String> = keys.into_iter().zip(&first).filter(|(_, f)| **f).map(|(k, _)| k).collect();
            if !mine.is_empty()
                && let Ok(mut claimed) = s.claimed.lock()
            {
                claimed.entry(seq).or_default().extend(mine);
            }
            Ok(first)
        })
    }

    /// Ids remembered now.
    pub fn len(&self) -> usize {
        self.shards.iter().filter_map(|s| s.lock().ok().map(|s| s.seen.len())).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Write the snapshot (temporary file, then rename); returns the ids written.
    pub fn save(&self) -> Result<usize, DedupError> {
        let Some(path) = &self.snapshot else { return Ok(0) };
        let err = |source| DedupError::Io { path: path.clone(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        // With a journal: held throughout, so no commit falls between the
        // snapshot and the journal's truncation; ids whose posts are not
        // yet written are left out (a replay must let them through).
        let mut journal = self.journal.as_ref().and_then(|j| j.lock().ok());
        let waiting: hashbrown::HashSet<u64> =
            journal.as_ref().map(|j| j.pending.values().flatten().copied().collect()).unwrap_or_default();
        let mut out = Vec::with_capacity(MAGIC.len() + 12 * self.len());
        out.extend_from_slice(MAGIC);
        let mut n = 0;
        for shard in &self.shards {
            let Ok(s) = shard.lock() else { continue };
            for &(k, t) in &s.order {
                if s.seen.get(&k) == Some(&t) && !waiting.contains(&k) {
                    out.extend_from_slice(&k.to_le_bytes());
                    out.extend_from_slice(&t.to_le_bytes());
                    n += 1;
                }
            }
        }
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&out).and_then(|()| f.sync_data()).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)?;
        if let Some(j) = journal.as_mut() {
            let jpath = j.path.clone();
            j.file.set_len(0).map_err(|source| DedupError::Io { path: jpath, source })?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(ttl: u64, max: usize) -> DedupConfig {
        DedupConfig {
            ttl_secs: ttl,
            max_ids: max,
            snapshot: None,
            redis: None,
            key_prefix: default_prefix(),
            claim_secs: 5,
        }
    }

    #[test]
    fn a_post_passes_once_per_network_and_the_oldest_are_forgotten_first() {
        let d = Dedup::open(&cfg(3600, 10_000), None).expect("open");
        assert!(d.first("twitter-v1", "1"));
        assert!(!d.first("twitter-v1", "1"));
        assert!(d.first("bluesky", "1"), "the same id on another network is another post");
        // max_ids: per shard, so fill well beyond and check the count holds.
        let small = Dedup::open(&cfg(3600, 160), None).expect("open");
        for i in 0..10_000 {
            small.first("x-v2", &i.to_string());
        }
        assert!(small.len() <= 160, "{}", small.len());
        assert!(small.first("x-v2", "0"), "the oldest ids were forgotten");
        assert!(!small.first("x-v2", "9999"), "the newest are remembered");
    }

    #[test]
    fn an_id_older_than_the_ttl_passes_again() {
        let d = Dedup::open(&cfg(60, 1000), None).expect("open");
        let now = now_secs();
        d.insert(key("x-v2", "old"), now - 61, now);
        d.insert(key("x-v2", "recent"), now - 59, now);
        assert!(d.first("x-v2", "old"), "seen 61 s ago with a 60 s ttl");
        assert!(!d.first("x-v2", "recent"));
    }

    #[test]
    fn the_snapshot_brings_the_ids_back_and_refuses_a_foreign_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("d.bin");
        let d = Dedup::open(&cfg(3600, 1000), Some(path.clone())).expect("open");
        for i in 0..500 {
            assert!(d.first("twitter-v1", &i.to_string()));
        }
        assert_eq!(d.save().expect("save"), 500);
        let back = Dedup::open(&cfg(3600, 1000), Some(path.clone())).expect("reopen");
        assert_eq!(back.len(), 500);
        assert!(!back.first("twitter-v1", "7") && back.first("twitter-v1", "500"));
        // With the buffer: an id counts for the next run once its batch is
        // written; the snapshot leaves out those still waiting.
        let path2 = dir.path().join("j.bin");
        let d = Dedup::open_with(&cfg(3600, 1000), Some(path2.clone()), true).expect("open");
        for (seq, id) in [(0, "a"), (1, "b"), (2, "c")] {
            assert!(d.first("x-v2", id));
            d.stage(seq, vec![key("x-v2", id)]);
        }
        d.commit(1).expect("commit");
        drop(d); // a crash: no snapshot; the journal holds "a"
        let back = Dedup::open_with(&cfg(3600, 1000), Some(path2.clone()), true).expect("reopen");
        assert!(!back.first("x-v2", "a"), "written: a duplicate after the restart");
        assert!(back.first("x-v2", "b") && back.first("x-v2", "c"), "never written: let through again");
        back.stage(5, vec![key("x-v2", "b")]);
        back.commit(5).expect("commit");
        assert_eq!(back.save().expect("save"), 2, "a and c; b waits for its batch");
        assert_eq!(std::fs::metadata(journal_path(&path2)).expect("journal").len(), 0, "emptied by the snapshot");
        std::fs::write(&path, b"something else").expect("write");
        let e = Dedup::open(&cfg(3600, 1000), Some(path)).expect_err("foreign").to_string();
        assert!(e.contains("d.bin") && e.contains("not a snapshot"), "{e}");
    }
}
