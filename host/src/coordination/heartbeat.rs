//! `<type>:<id>:heartbeat`: SETEX with a TTL of 1.5 × the interval, holding the
//! current time in RFC 3339 (UTC) — the original wrote the time with a
//! `%M`-for-month bug; this writes it right. Withheld while the collector
//! cannot collect ([`crate::telemetry::Health`]); deleted on a clean shutdown.

use std::sync::Arc;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;

use crate::rules::Collector;
use crate::telemetry::Health;

/// The shortest interval allowed (seconds).
pub const MIN_INTERVAL_SECS: u64 = 5;

/// The heartbeat key of a collector.
pub fn key(who: Collector) -> String {
    format!("{who}:heartbeat")
}

/// TTL for an interval: 1.5 × interval, rounded up to whole seconds.
pub fn ttl_secs(interval: Duration) -> u64 {
    (interval.as_millis() as u64 * 3).div_ceil(2000).max(1)
}

/// Beat every `interval` until `shutdown` (withheld while `health` reports a
/// problem).
pub async fn run(
    mut conn: ConnectionManager,
    key: String,
    interval: Duration,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    let ttl = ttl_secs(interval);
    let mut failing = false;
    let mut withheld = false;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        if let Some(reason) = health.problem() {
            if !withheld {
                tracing::warn!(key, reason, "heartbeat withheld: the collector cannot collect");
                withheld = true;
            }
            continue;
        }
        withheld = false;
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
        match conn.set_ex::<_, _, ()>(&key, &now, ttl).await {
            Ok(()) => {
                if failing {
                    tracing::info!(key, "heartbeat resumed");
                }
                failing = false;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(key, error = %e, "heartbeat failed; collection continues, retrying every beat");
                }
                failing = true;
            }
        }
    }
    let _ = conn.del::<_, ()>(&key).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_is_one_and_a_half_intervals() {
        assert_eq!(ttl_secs(Duration::from_secs(10)), 15);
        assert_eq!(ttl_secs(Duration::from_secs(5)), 8);
        assert_eq!(key(Collector::new(crate::rules::RuleType::Track, 3)), "track:3:heartbeat");
    }
}
