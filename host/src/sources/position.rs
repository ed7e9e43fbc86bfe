//! Where a live source keeps its last confirmed position, so that a
//! reconnect, a restart or a standby's takeover asks for the gap (issue 25,
//! point 2). The position is what the sink has written: each batch carries
//! its highest position as its checkpoint, the buffer confirms it to the
//! source once the sink has written the batch, and a persister writes the
//! confirmed value every second and once more at the end.
//!
//! * Jetstream: the event's `time_us`.
//! * X v2: the time (Unix milliseconds) the collector read the post.
//!
//! Stores: a file, a Redis key, or — with `[traptor] id = "auto"` — a Redis
//! key written only while this collector's lease holds the id (fencing: a
//! collector that lost its id cannot move the new holder's position back).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::coordination::lease::Lease;

/// Where the position is kept.
#[derive(Debug, Clone)]
pub enum CursorStore {
    None,
    File(PathBuf),
    Redis {
        conn: redis::aio::ConnectionManager,
        key: String,
    },
    /// Written only while `lease` is ours.
    Fenced {
        lease: Lease,
        key: String,
    },
}

impl CursorStore {
    /// The store a source uses when its configuration names none: the
    /// collector's Redis (`traptor-position:<type>:<id>:<source>`), fenced by
    /// the lease when the id is held by one.
    pub fn for_collector(
        lease: Option<&Lease>,
        redis: Option<&redis::aio::ConnectionManager>,
        who: crate::rules::Collector,
        label: &str,
    ) -> CursorStore {
        let key = crate::coordination::lease::position_key(who, label);
        match (lease, redis) {
            (Some(l), _) => CursorStore::Fenced { lease: l.clone(), key },
            (None, Some(conn)) => CursorStore::Redis { conn: conn.clone(), key },
            (None, None) => CursorStore::None,
        }
    }

    pub fn is_none(&self) -> bool {
        matches!(self, CursorStore::None)
    }

    pub async fn load(&self) -> Option<u64> {
        let (conn, key) = match self {
            CursorStore::None => return None,
            CursorStore::File(p) => return std::fs::read_to_string(p).ok()?.trim().parse().ok(),
            CursorStore::Redis { conn, key } => (conn.clone(), key),
            CursorStore::Fenced { lease, key } => (lease.connection(), key),
        };
        let mut c = conn;
        redis::cmd("GET").arg(key).query_async::<Option<u64>>(&mut c).await.ok().flatten()
    }

    pub async fn save(&self, cursor: u64) -> Result<(), String> {
        match self {
            CursorStore::None => Ok(()),
            CursorStore::File(p) => {
                let tmp = p.with_extension("tmp");
                std::fs::write(&tmp, format!("{cursor}\n"))
                    .and_then(|()| std::fs::rename(&tmp, p))
                    .map_err(|e| format!("cannot write cursor file {}: {e}", p.display()))
            }
            CursorStore::Redis { conn, key } => {
                let mut c = conn.clone();
                redis::cmd("SET").arg(key).arg(cursor).query_async::<()>(&mut c).await.map_err(|e| e.to_string())
            }
            CursorStore::Fenced { lease, key } => match lease.fenced_set(key, &cursor.to_string()).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(format!("{key}: not written, the id's lease is no longer ours")),
                Err(e) => Err(e.to_string()),
            },
        }
    }
}

/// Writes the confirmed position every second, and once more when stopped.
#[derive(Debug)]
pub struct Persister {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    confirmed: Arc<AtomicU64>,
}

/// How long the last save waits for the sink to confirm what was read.
const FINISH_WAIT: Duration = Duration::from_secs(5);

impl Persister {
    /// Load the stored position into `confirmed` (the higher wins), then
    /// keep writing `confirmed` while it grows. Returns the stored value.
    pub async fn start(
        store: &CursorStore,
        confirmed: &Arc<AtomicU64>,
        what: &'static str,
    ) -> (Persister, Option<u64>) {
        let stored = store.load().await;
        if let Some(c) = stored {
            confirmed.fetch_max(c, Ordering::AcqRel);
        }
        let kept = confirmed.clone();
        let (store, confirmed) = (store.clone(), confirmed.clone());
        let stop = CancellationToken::new();
        let done = stop.clone();
        let task = tokio::spawn(async move {
            let mut last = stored.unwrap_or(0);
            loop {
                let end = tokio::select! {
                    () = done.cancelled() => true,
                    () = tokio::time::sleep(Duration::from_secs(1)) => false,
                };
                let c = confirmed.load(Ordering::Acquire);
                if c > last {
                    match store.save(c).await {
                        Ok(()) => last = c,
                        Err(e) => tracing::warn!(error = %e, "cannot save the {what} position"),
                    }
                }
                if end {
                    return;
                }
            }
        });
        (Persister { stop, task, confirmed: kept }, stored)
    }

    /// Write the last confirmed position and stop: first wait (up to 5 s)
    /// until the sink has confirmed `read` (the highest position the source
    /// read), so that a run's last position is where its sink stopped — a
    /// successor asks for the gap from there, not from a second earlier.
    pub async fn finish(self, read: u64) {
        let until = tokio::time::Instant::now() + FINISH_WAIT;
        while self.confirmed.load(Ordering::Acquire) < read && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Unix time in milliseconds (0 before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
