//! Match counts per rule, added by the workers: waiting for the stats
//! flusher (coordination writes them to Redis as the original did) and kept
//! in memory over the last 15 minutes for the admin endpoint.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

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
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    secs / SLOT_SECS
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

    /// What waits to be written to Redis (the flusher takes it).
    pub(crate) fn take(&self) -> (HashMap<String, u64>, Option<u64>) {
        let p = self.pending.lock().map(|mut p| std::mem::take(&mut *p)).unwrap_or_default();
        let l = self.limit.lock().map(|mut l| l.take()).unwrap_or_default();
        (p, l)
    }

    /// Counts a failed flush could not write, back for the next one.
    pub(crate) fn put_back(&self, counts: HashMap<String, u64>, limit: Option<u64>) {
        self.add(counts.iter().map(|(k, v)| (k.as_str(), *v)));
        if let Some(l) = limit {
            self.limit(l);
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
