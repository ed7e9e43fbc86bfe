//! Rule statistics, as the original kept them (scutils' rolling time windows):
//!
//! * `stats:<type>:<id>:<rule_id>` — a sorted set with one member per match,
//!   scored by the match time; entries older than the window are trimmed at
//!   every flush, so `ZCARD` is the number of matches in the last window.
//! * `limit:<type>:<id>` — a sorted set whose members are times and scores
//!   Twitter's cumulative count of undelivered posts from `limit` notices.
//!
//! Workers add counts in memory ([`RuleHits`]); a flusher writes them in one
//! pipeline per period. When Redis is slow or away the counts stay as numbers
//! per rule (bounded by the number of rules) and are written when it returns.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;

/// Match counts per rule: waiting to be written to Redis (`stats`), and/or
/// kept in memory over the last 15 minutes for the admin endpoint.
#[derive(Debug, Default)]
pub struct RuleHits {
    pending: Mutex<HashMap<String, u64>>,
    /// Latest undelivered count from a `limit` notice, not yet written.
    limit: Mutex<Option<u64>>,
    /// Counts go to Redis (a flusher takes `pending`).
    to_redis: bool,
    /// Per-rule totals and recent counts (`/api/rules`), when asked for.
    windows: Option<Mutex<HashMap<String, RuleWindow>>>,
}

/// Slots of [`RuleWindow`]: 90 of 10 s = 15 minutes.
const SLOT_SECS: u64 = 10;
const SLOTS: usize = 90;

/// One rule's matches: the total, and per 10-second slot over 15 minutes.
#[derive(Debug, Clone)]
pub struct RuleWindow {
    pub total: u64,
    slots: [u32; SLOTS],
    /// The absolute slot number the newest entry belongs to.
    newest: u64,
}

impl RuleWindow {
    fn new() -> RuleWindow {
        RuleWindow { total: 0, slots: [0; SLOTS], newest: 0 }
    }

    fn add(&mut self, slot: u64, n: u64) {
        self.advance(slot);
        self.total += n;
        let s = &mut self.slots[(slot % SLOTS as u64) as usize];
        *s = s.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
    }

    /// Clear the slots between the newest entry and `slot`.
    fn advance(&mut self, slot: u64) {
        if slot <= self.newest {
            return;
        }
        for s in (self.newest + 1..=slot).take(SLOTS) {
            self.slots[(s % SLOTS as u64) as usize] = 0;
        }
        self.newest = slot;
    }

    /// Matches in the last `secs` seconds (whole 10 s slots, the current one included).
    pub fn recent(&self, now_slot: u64, secs: u64) -> u64 {
        let n = (secs / SLOT_SECS).clamp(1, SLOTS as u64);
        (0..n)
            .filter_map(|back| now_slot.checked_sub(back))
            .filter(|s| *s <= self.newest && self.newest - s < SLOTS as u64)
            .map(|s| u64::from(self.slots[(s % SLOTS as u64) as usize]))
            .sum()
    }
}

/// The current 10-second slot number.
pub fn now_slot() -> u64 {
    now_secs() as u64 / SLOT_SECS
}

impl RuleHits {
    /// `to_redis`: a flusher writes the counts to Redis; `windows`: keep
    /// per-rule totals and the last 15 minutes in memory.
    pub fn new(to_redis: bool, windows: bool) -> RuleHits {
        RuleHits { to_redis, windows: windows.then(Mutex::default), ..RuleHits::default() }
    }

    /// Add matches per rule id (one lock per batch).
    pub fn add<'a>(&self, counts: impl IntoIterator<Item = (&'a str, u64)>) {
        let counts: Vec<(&str, u64)> = counts.into_iter().collect();
        if self.to_redis
            && let Ok(mut p) = self.pending.lock()
        {
            for (rule, n) in &counts {
                *p.entry((*rule).to_owned()).or_default() += n;
            }
        }
        if let Some(w) = &self.windows
            && let Ok(mut w) = w.lock()
        {
            let slot = now_slot();
            for (rule, n) in counts {
                w.entry(rule.to_owned()).or_insert_with(RuleWindow::new).add(slot, n);
            }
        }
    }

    /// A copy of every rule's window (the admin endpoint).
    pub fn windows(&self) -> HashMap<String, RuleWindow> {
        self.windows.as_ref().and_then(|w| w.lock().ok().map(|w| w.clone())).unwrap_or_default()
    }

    /// Record a `limit` notice (cumulative count; the latest wins).
    pub fn limit(&self, undelivered: u64) {
        if let Ok(mut l) = self.limit.lock() {
            *l = Some(l.map_or(undelivered, |x| x.max(undelivered)));
        }
    }

    fn take(&self) -> (HashMap<String, u64>, Option<u64>) {
        let p = self.pending.lock().map(|mut p| std::mem::take(&mut *p)).unwrap_or_default();
        let l = self.limit.lock().map(|mut l| l.take()).unwrap_or_default();
        (p, l)
    }

    fn put_back(&self, counts: HashMap<String, u64>, limit: Option<u64>) {
        self.add(counts.iter().map(|(k, v)| (k.as_str(), *v)));
        if let Some(l) = limit {
            self.limit(l);
        }
    }
}

/// Key names of one collector.
#[derive(Debug, Clone)]
pub struct StatsKeys {
    pub prefix: String,
    pub limit: String,
}

impl StatsKeys {
    pub fn new(who: crate::rules::Collector) -> StatsKeys {
        StatsKeys { prefix: format!("stats:{who}:"), limit: format!("limit:{who}") }
    }
    pub fn rule(&self, rule_id: &str) -> String {
        format!("{}{rule_id}", self.prefix)
    }
}

static SEQ: AtomicU64 = AtomicU64::new(0);

fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Members per ZADD command.
const CHUNK: u64 = 1000;

/// `limit:` entries kept.
const LIMIT_ENTRIES: usize = 1000;

/// Write pending counts once. On failure the counts are kept for next time.
pub async fn flush(conn: &mut ConnectionManager, keys: &StatsKeys, hits: &RuleHits, window: Duration) -> bool {
    let (counts, limit) = hits.take();
    if counts.is_empty() && limit.is_none() {
        return true;
    }
    let now = now_secs();
    let cutoff = now - window.as_secs_f64();
    let mut pipe = redis::pipe();
    for (rule, &n) in &counts {
        let key = keys.rule(rule);
        let mut left = n;
        while left > 0 {
            let k = left.min(CHUNK);
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(&key);
            for _ in 0..k {
                let seq = SEQ.fetch_add(1, Ordering::Relaxed);
                // Unique members: one per match, scored by time (ZCARD counts matches).
                cmd.arg(now).arg(format!("{now:.6}:{seq}"));
            }
            pipe.add_command(cmd).ignore();
            left -= k;
        }
        pipe.cmd("ZREMRANGEBYSCORE").arg(&key).arg("-inf").arg(cutoff).ignore();
        pipe.cmd("EXPIRE").arg(&key).arg(window.as_secs() + 60).ignore();
    }
    if let Some(l) = limit {
        // Score = the cumulative count, member = the time (the original's
        // layout). Counts only grow, so rank order is time order: keep the
        // newest entries, and let the key expire with the window.
        pipe.cmd("ZADD").arg(&keys.limit).arg(l).arg(format!("{now:.6}")).ignore();
        pipe.cmd("ZREMRANGEBYRANK").arg(&keys.limit).arg(0).arg(-(LIMIT_ENTRIES as i64) - 1).ignore();
        pipe.cmd("EXPIRE").arg(&keys.limit).arg(window.as_secs() + 60).ignore();
    }
    match pipe.query_async::<()>(conn).await {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(error = %e, "stats flush failed; counts kept for the next one");
            hits.put_back(counts, limit);
            false
        }
    }
}

/// Flush every `every` until `shutdown`, then once more.
pub async fn run(
    mut conn: ConnectionManager,
    keys: StatsKeys,
    hits: std::sync::Arc<RuleHits>,
    window: Duration,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut failing = false;
    loop {
        let stop = tokio::select! {
            () = shutdown.cancelled() => true,
            () = tokio::time::sleep(every) => false,
        };
        let ok = flush(&mut conn, &keys, &hits, window).await;
        if ok && failing {
            tracing::info!("rule stats written again");
        } else if !ok && !failing {
            tracing::warn!("cannot write rule stats to Redis; counting in memory until it returns");
        }
        failing = !ok;
        if stop {
            // One last try, bounded.
            if !ok {
                let _ = tokio::time::timeout(Duration::from_secs(2), flush(&mut conn, &keys, &hits, window)).await;
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_aggregate_and_survive_a_failed_flush() {
        let h = RuleHits::new(true, false);
        h.add([("a", 2), ("b", 1)]);
        h.add([("a", 3)]);
        h.limit(10);
        h.limit(7);
        let (c, l) = h.take();
        assert_eq!(c.get("a"), Some(&5));
        assert_eq!(l, Some(10));
        h.put_back(c, l);
        h.add([("a", 1)]);
        let (c, l) = h.take();
        assert_eq!(c.get("a"), Some(&6));
        assert_eq!(l, Some(10));
    }

    #[test]
    fn windows_keep_totals_and_the_last_minutes() {
        let mut w = RuleWindow::new();
        w.add(1000, 5); // 10 s slots: 1000 is "now - 20 min" below
        w.add(1120, 2);
        w.add(1125, 3);
        w.add(1129, 1);
        assert_eq!(w.total, 11);
        assert_eq!(w.recent(1129, 60), 4, "last minute: slots 1124..=1129 hold 3 and 1");
        assert_eq!(w.recent(1131, 60), 1, "slots 1126..=1131 hold only the 1");
        assert_eq!(w.recent(1129, 900), 6, "the match of slot 1000 is older than 15 minutes");
        assert_eq!(w.recent(1300, 900), 0, "nothing in the last 15 minutes");
        let h = RuleHits::new(false, true);
        h.add([("a", 2)]);
        assert_eq!(h.windows()["a"].total, 2);
        assert!(h.take().0.is_empty(), "no Redis: nothing pending");
    }
}
