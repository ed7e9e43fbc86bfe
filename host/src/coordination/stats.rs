//! Rule statistics, as the original kept them (scutils' rolling time windows):
//!
//! * `stats:<type>:<id>:<rule_id>` — a sorted set with one member per match,
//!   scored by the match time; entries older than the window are trimmed at
//!   every flush, so `ZCARD` is the number of matches in the last window.
//! * `limit:<type>:<id>` — a sorted set whose members are times and scores
//!   Twitter's cumulative count of undelivered posts from `limit` notices.
//!
//! Workers add counts in memory ([`RuleHits`], in telemetry); a flusher writes them in one
//! pipeline per period. When Redis is slow or away the counts stay as numbers
//! per rule (bounded by the number of rules) and are written when it returns.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;

use crate::telemetry::RuleHits;

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
