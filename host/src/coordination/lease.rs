//! `[traptor] id = "auto"`: ids held by lease, so that a standby takes a
//! dead collector's place (issue 25, point 1).
//!
//! * **Claim.** The candidates are the ids of the collector's type that have
//!   rules in Redis (`traptor-<type>:<id>:<n>`), lowest first. One Lua script
//!   claims an id only when `traptor-lease:<type>:<id>` is absent: it takes
//!   the next fencing number (`INCR traptor-lease-fence:<type>:<id>`) and
//!   sets the lease to `<owner> <fence>` with a TTL of `lease_secs`.
//! * **Standby.** When every id is held, the collector polls the leases of
//!   the ids it knows every 250 ms (one `EXISTS` of all of them) and scans for
//!   new ids every half lease: a lease that expires or is released is taken
//!   within a quarter of a second of it going.
//! * **Renewal.** Every third of `lease_secs`, only while the value is still
//!   ours. A renewal refused (another owner: the lease expired while Redis
//!   was away) stops the run at once; renewals that fail for two thirds of
//!   the lease stop it before the lease can expire, so two collectors never
//!   stream one id's rules at once.
//! * **Release.** At the end of a run (SIGTERM included), after the sink has
//!   written: only while it is still ours.
//! * **Fencing.** A source's position (`traptor-position:<type>:<id>:<source>`)
//!   is written only while the lease still holds this collector's fence.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;

use super::CoordinationError;
use crate::rules::{Collector, RuleType};
use crate::telemetry::Metrics;

/// How often a holder counts the ids held and free.
const FLEET_COUNT_EVERY: Duration = Duration::from_secs(10);

/// How often a standby looks at the leases it waits for.
const STANDBY_POLL: Duration = Duration::from_millis(250);

const CLAIM: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. fence, 'PX', ARGV[2])
return fence";

const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

const FENCED_SET: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[2], ARGV[2]) return 1 end
return 0";

/// The lease key of a collector id.
pub fn lease_key(who: Collector) -> String {
    format!("traptor-lease:{who}")
}

fn fence_key(who: Collector) -> String {
    format!("traptor-lease-fence:{who}")
}

/// Where a source of collector `who` keeps its last confirmed position.
pub fn position_key(who: Collector, source: &str) -> String {
    format!("traptor-position:{who}:{source}")
}

/// A held id.
#[derive(Clone)]
pub struct Lease {
    conn: ConnectionManager,
    pub who: Collector,
    /// `<owner> <fence>`, the value the lease holds while it is ours.
    value: String,
    /// Grows with every claim of this id: a later holder's is larger.
    pub fence: u64,
    pub ttl: Duration,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("who", &self.who).field("fence", &self.fence).field("ttl", &self.ttl).finish()
    }
}

/// Who this process is in a lease: `<host>:<pid>`.
pub fn owner() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && !h.contains(' '))
        .unwrap_or_else(|| "host".into());
    format!("{host}:{}", std::process::id())
}

/// The ids of type `t` that have at least one rule in Redis.
pub async fn ids_with_rules(conn: &mut ConnectionManager, t: RuleType) -> Result<BTreeSet<u32>, CoordinationError> {
    let keys = crate::rules::redis::scan(conn, &format!("traptor-{t}:*")).await?;
    Ok(keys.iter().filter_map(|k| super::rules_admin::parse_rule_key(k)).map(|(_, slot)| slot.id).collect())
}

/// Claim `who` if no one holds it: its fencing number, or `None`.
async fn try_claim(
    conn: &mut ConnectionManager,
    who: Collector,
    owner: &str,
    ttl: Duration,
) -> redis::RedisResult<Option<u64>> {
    redis::Script::new(CLAIM)
        .key(lease_key(who))
        .key(fence_key(who))
        .arg(owner)
        .arg(ttl.as_millis() as u64)
        .invoke_async(conn)
        .await
}

/// Wait until an id of type `t` with rules is free and claim it (the lowest
/// first). `None`: shut down while waiting.
pub async fn claim(
    conn: &ConnectionManager,
    t: RuleType,
    owner: &str,
    ttl: Duration,
    shutdown: &CancellationToken,
) -> Result<Option<Lease>, CoordinationError> {
    let mut c = conn.clone();
    let mut said_standby = false;
    let mut failing = false;
    loop {
        let ids = match ids_with_rules(&mut c, t).await {
            Ok(ids) => ids,
            Err(e) if e.is_config() => return Err(e),
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot list the ids with rules; retrying");
                }
                failing = true;
                BTreeSet::new()
            }
        };
        for &id in &ids {
            let who = Collector::new(t, id);
            match try_claim(&mut c, who, owner, ttl).await {
                Ok(Some(fence)) => {
                    tracing::info!(collector = %who, fence, lease_secs = ttl.as_secs(), "id claimed");
                    return Ok(Some(Lease { conn: conn.clone(), who, value: format!("{owner} {fence}"), fence, ttl }));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(collector = %who, error = %e, "cannot claim the id; retrying");
                    failing = true;
                }
            }
        }
        if !said_standby {
            let held: Vec<u32> = ids.iter().copied().collect();
            tracing::info!(traptor_type = %t, ids_held = ?held, "standby: every id with rules is held; waiting for one");
            said_standby = true;
        }
        if !wait_for_a_free_id(&mut c, t, &ids, ttl / 2, shutdown).await {
            return Ok(None);
        }
    }
}

/// Poll the leases of `ids` until one is gone or `rescan` has passed
/// (`false`: shut down).
async fn wait_for_a_free_id(
    conn: &mut ConnectionManager,
    t: RuleType,
    ids: &BTreeSet<u32>,
    rescan: Duration,
    shutdown: &CancellationToken,
) -> bool {
    let until = Instant::now() + rescan.max(STANDBY_POLL);
    let keys: Vec<String> = ids.iter().map(|&id| lease_key(Collector::new(t, id))).collect();
    while Instant::now() < until {
        tokio::select! {
            () = shutdown.cancelled() => return false,
            () = tokio::time::sleep(STANDBY_POLL) => {}
        }
        if keys.is_empty() {
            continue;
        }
        let held: redis::RedisResult<usize> = redis::cmd("EXISTS").arg(&keys).query_async(conn).await;
        if held.is_ok_and(|n| n < keys.len()) {
            return true;
        }
    }
    true
}

impl Lease {
    /// The Redis connection the lease is kept on.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Renew while ours (`Ok(false)`: someone else holds it now).
    pub async fn renew(&self) -> redis::RedisResult<bool> {
        let mut c = self.conn.clone();
        let n: i64 = redis::Script::new(RENEW)
            .key(lease_key(self.who))
            .arg(&self.value)
            .arg(self.ttl.as_millis() as u64)
            .invoke_async(&mut c)
            .await?;
        Ok(n == 1)
    }

    /// Give the id back (only while it is ours).
    pub async fn release(&self) {
        let mut c = self.conn.clone();
        let r: redis::RedisResult<i64> =
            redis::Script::new(RELEASE).key(lease_key(self.who)).arg(&self.value).invoke_async(&mut c).await;
        match r {
            Ok(1) => tracing::info!(collector = %self.who, fence = self.fence, "id released"),
            Ok(_) => tracing::warn!(collector = %self.who, "the id's lease was no longer ours at release"),
            Err(e) => tracing::warn!(collector = %self.who, error = %e, "cannot release the id; it expires by itself"),
        }
    }

    /// Write `value` at `key` only while the lease is ours (`Ok(false)`: not).
    pub async fn fenced_set(&self, key: &str, value: &str) -> redis::RedisResult<bool> {
        let mut c = self.conn.clone();
        let n: i64 = redis::Script::new(FENCED_SET)
            .key(lease_key(self.who))
            .key(key)
            .arg(&self.value)
            .arg(value)
            .invoke_async(&mut c)
            .await?;
        Ok(n == 1)
    }

    /// Count the ids of the type with rules, held and free, into the fleet
    /// gauges every 10 s until `stop` (each count bounded by 10 s).
    pub async fn count_fleet_every(self, metrics: Arc<Metrics>, stop: CancellationToken) {
        loop {
            let _ = tokio::time::timeout(FLEET_COUNT_EVERY, self.count_fleet(&metrics)).await;
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(FLEET_COUNT_EVERY) => {}
            }
        }
    }

    async fn count_fleet(&self, metrics: &Metrics) {
        let mut c = self.conn.clone();
        let Ok(ids) = ids_with_rules(&mut c, self.who.rule_type).await else { return };
        let keys: Vec<String> = ids.iter().map(|&id| lease_key(Collector::new(self.who.rule_type, id))).collect();
        if keys.is_empty() {
            return;
        }
        if let Ok(held) = redis::cmd("EXISTS").arg(&keys).query_async::<u64>(&mut c).await {
            metrics.fleet_ids_held.store(held, Relaxed);
            metrics.fleet_ids_free.store((keys.len() as u64).saturating_sub(held), Relaxed);
        }
    }

    /// Renew every third of the TTL until `stop`. When the lease is someone
    /// else's, or two thirds of it have passed since the last renewal, cancel
    /// `lost` and `run` (and return): the run stops before the lease can
    /// expire. Every attempt is bounded by the time left to that deadline.
    pub async fn keep(self, tokens: LeaseTokens, stop: CancellationToken) {
        let every = self.ttl / 3;
        let give_up_after = self.ttl * 2 / 3;
        let mut last_ok = Instant::now();
        let mut failing = false;
        let lose = |why: &str| {
            tracing::error!(collector = %self.who, fence = self.fence, "{why}; stopping");
            tokens.lost.cancel();
            tokens.run.cancel();
        };
        loop {
            let deadline = last_ok + give_up_after;
            let next = (Instant::now() + every).min(deadline);
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep_until(next.into()) => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let renewed = match tokio::time::timeout(left, self.renew()).await {
                Ok(r) => r,
                Err(_) => Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()),
            };
            match renewed {
                Ok(true) => {
                    if failing {
                        tracing::info!(collector = %self.who, "lease renewed again");
                    }
                    failing = false;
                    last_ok = Instant::now();
                }
                Ok(false) => return lose("lease lost: another collector holds the id"),
                Err(e) => {
                    if !failing {
                        tracing::warn!(collector = %self.who, error = %e, "cannot renew the lease; retrying");
                    }
                    failing = true;
                    if last_ok.elapsed() >= give_up_after {
                        return lose("lease not renewed for two thirds of its life");
                    }
                }
            }
        }
    }
}

/// What [`Lease::keep`] cancels when the lease goes: the run's token, and
/// one that says why it stopped.
#[derive(Debug, Clone)]
pub struct LeaseTokens {
    pub run: CancellationToken,
    pub lost: CancellationToken,
}
