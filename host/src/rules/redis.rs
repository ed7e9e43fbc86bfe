//! The `redis` rule store, compatible with the original traptor: one HASH per
//! rule at `traptor-<type>:<id>:<n>` (`<n>` informational), found with SCAN
//! (never KEYS, which blocks the server) and read with pipelined HGETALL.
//! Every field is kept and passed through to the envelope.
//!
//! Reload: a message `<type>:<id>` on the pub/sub channel (default
//! `traptor-notify`) reloads at once; a periodic check is the safety net for a
//! missed message. A failed reload keeps the last good rules.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use serde::Deserialize;

use super::{Collector, LoadFuture, Rule, RuleProblem, RuleSnapshot, RuleType, RulesComponent, RulesError};
use crate::component::Problems;
use crate::redis_conn::{DEFAULT_REDIS_URL, RedisAccess, RedisError, RedisUrl, connect_with_retry};

/// `[rules]` with `type = "redis"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisRulesConfig {
    /// Server URL (a password in it is never logged).
    #[serde(default = "default_url")]
    pub url: String,
    /// Pub/sub channel of reload notices.
    #[serde(default = "default_channel")]
    pub channel: String,
    /// Safety-net reload period.
    #[serde(default = "default_check_secs")]
    pub rule_check_interval_secs: u64,
    /// A rule (all its fields) larger than this is refused with its key.
    #[serde(default = "default_max_rule_bytes")]
    pub max_rule_bytes: usize,
    /// `rediss://`: PEM file of the CA that signed the server's certificate
    /// (default: the system's trusted roots).
    #[serde(default)]
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// `rediss://`: accept any certificate. Tests only.
    #[serde(default)]
    pub tls_insecure: bool,
    /// The password, `{ env = "…" }` or `{ file = "…" }`, instead of one in the URL.
    #[serde(default)]
    pub password: Option<crate::secret::SecretRef>,
}

fn default_max_rule_bytes() -> usize {
    super::file::DEFAULT_MAX_RULE_BYTES
}

fn default_url() -> String {
    DEFAULT_REDIS_URL.into()
}
fn default_channel() -> String {
    "traptor-notify".into()
}
fn default_check_secs() -> u64 {
    60
}

impl RulesComponent for RedisRulesConfig {
    fn check(&self, p: &mut Problems<'_>) {
        p.range("rule_check_interval_secs", self.rule_check_interval_secs, 1, 86_400);
        p.range("max_rule_bytes", self.max_rule_bytes as u64, 1 << 10, 16 << 20);
        if self.channel.is_empty() {
            p.add("channel", "must not be empty");
        }
    }

    fn resolve_paths(&mut self, base: &crate::component::BaseDir) {
        if let Some(ca) = &mut self.tls_ca_file {
            base.fix(ca);
        }
        if let Some(p) = &mut self.password {
            base.fix_secret(p);
        }
    }

    fn redis_url(&self) -> Option<RedisUrl> {
        Some(self.server())
    }

    fn describe(&self, who: Collector) -> String {
        format!("{} ({}:*)", self.server(), collector_prefix(who))
    }

    fn load<'a>(&'a self, who: Collector, redis: Option<&'a mut ConnectionManager>) -> LoadFuture<'a> {
        Box::pin(async move {
            let conn = redis.ok_or(RulesError::NoConnection)?;
            Ok(load(conn, who, self.max_rule_bytes).await?)
        })
    }

    fn watch(
        &self,
        who: Collector,
        redis: Option<ConnectionManager>,
        tx: watch::Sender<Arc<RuleSnapshot>>,
        reload: Arc<tokio::sync::Notify>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let opts = WatchOptions {
            reload,
            url: self.server(),
            channel: self.channel.clone(),
            who,
            check_every: Duration::from_secs(self.rule_check_interval_secs),
            max_rule_bytes: self.max_rule_bytes,
        };
        match redis {
            Some(conn) => tokio::spawn(watch(conn, opts, tx, shutdown)),
            None => tokio::spawn(async move {
                tracing::error!(
                    "internal: the redis rule store was started without a connection; rules stay as loaded"
                );
            }),
        }
    }
}

impl RedisRulesConfig {
    fn server(&self) -> RedisUrl {
        RedisUrl::new(self.url.clone()).with_access(RedisAccess {
            tls_ca_file: self.tls_ca_file.clone(),
            tls_insecure: self.tls_insecure,
            password: self.password.clone(),
        })
    }
}

/// `traptor-<type>:<id>`.
pub fn collector_prefix(who: Collector) -> String {
    format!("traptor-{who}")
}

/// The numeric `<n>` of a rule key, for ordering.
fn key_number(key: &str) -> Option<u64> {
    key.rsplit(':').next()?.parse().ok()
}

/// SCAN for keys matching `pattern` (all of them; COUNT 1000 per round trip).
pub async fn scan(conn: &mut ConnectionManager, pattern: &str) -> Result<Vec<String>, RedisError> {
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) =
            redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(1000).query_async(conn).await?;
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort_by(|a, b| (key_number(a), a).cmp(&(key_number(b), b)));
    keys.dedup();
    Ok(keys)
}

/// HGETALL every key, pipelined in chunks. Keys that vanished come back empty.
pub async fn hgetall_many(
    conn: &mut ConnectionManager,
    keys: &[String],
) -> Result<Vec<Vec<(String, String)>>, RedisError> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(500) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.hgetall(k);
        }
        let maps: Vec<Vec<(String, String)>> = pipe.query_async(conn).await?;
        out.extend(maps);
    }
    Ok(out)
}

/// Load the rules of collector `<type>:<id>`; a rule larger than
/// `max_rule_bytes` (its fields' names and values) is refused with its key.
pub async fn load(
    conn: &mut ConnectionManager,
    who: Collector,
    max_rule_bytes: usize,
) -> Result<RuleSnapshot, RedisError> {
    let t = who.rule_type;
    let keys = scan(conn, &format!("{}:*", collector_prefix(who))).await?;
    let hashes = hgetall_many(conn, &keys).await?;
    let mut snap = RuleSnapshot::default();
    let mut rules = Vec::with_capacity(keys.len());
    let mut seen = super::IdIndex::with_capacity(keys.len());
    for (key, fields) in keys.into_iter().zip(hashes) {
        if fields.is_empty() {
            continue;
        }
        let bytes: usize = fields.iter().map(|(k, v)| k.len() + v.len()).sum();
        if bytes > max_rule_bytes {
            let message = super::RuleError::TooLarge { bytes, max: max_rule_bytes }.to_string();
            snap.problems.push(RuleProblem { location: key, message });
            continue;
        }
        match Rule::from_fields(fields, t) {
            Ok(rule) => {
                rules.push(rule);
                if !seen.insert(&rules, rules.len() as u32 - 1) {
                    let rule = rules.pop();
                    let id = rule.as_ref().map_or("", |r| r.rule_id());
                    let message = format!("duplicate rule_id {id:?}; the first is kept");
                    snap.problems.push(RuleProblem { location: key, message });
                }
            }
            Err(e) => snap.problems.push(RuleProblem { location: key, message: e.to_string() }),
        }
    }
    snap.rules = std::sync::Arc::new(rules);
    Ok(snap)
}

/// Settings of the Redis watcher.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Load at once when notified (SIGHUP).
    pub reload: Arc<tokio::sync::Notify>,
    pub url: RedisUrl,
    pub channel: String,
    pub who: Collector,
    pub check_every: Duration,
    pub max_rule_bytes: usize,
}

/// Publish a new snapshot whenever the collector's rules change: at once on a
/// `<type>:<id>` notice, and every `check_every` regardless.
pub async fn watch(
    mut conn: ConnectionManager,
    opts: WatchOptions,
    tx: watch::Sender<Arc<RuleSnapshot>>,
    shutdown: CancellationToken,
) {
    let me = opts.who.to_string();
    let (push_tx, mut push_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut sub = match connect_with_retry(&opts.url, Some(push_tx), &shutdown).await {
        Ok(Some(c)) => c,
        Ok(None) => return,
        Err(e @ RedisError::NoPush { .. }) => {
            tracing::warn!("{e}");
            return periodic_only(conn, opts, tx, shutdown).await;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot subscribe to rule notices; relying on the periodic check");
            return periodic_only(conn, opts, tx, shutdown).await;
        }
    };
    loop {
        match sub.subscribe(&opts.channel).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, channel = %opts.channel, "subscribe failed; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
    tracing::info!(channel = %opts.channel, collector = %me, "listening for rule notices");
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + opts.check_every, opts.check_every);
    loop {
        let notified_at = tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => None,
            () = opts.reload.notified() => None,
            msg = push_rx.recv() => {
                let Some(msg) = msg else { return };
                if msg.kind != redis::PushKind::Message {
                    continue;
                }
                let payload = msg.data.get(1).and_then(|v| redis::from_redis_value::<String>(v.clone()).ok());
                match payload {
                    Some(p) if p == me => Some(Instant::now()),
                    Some(p) if p.parse::<Collector>().is_ok() => continue,
                    other => {
                        tracing::warn!(channel = %opts.channel, message = ?other, "ignoring a malformed rule notice (expected <type>:<id>)");
                        continue;
                    }
                }
            }
        };
        reload(&mut conn, &opts, &tx, notified_at).await;
    }
}

async fn periodic_only(
    mut conn: ConnectionManager,
    opts: WatchOptions,
    tx: watch::Sender<Arc<RuleSnapshot>>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(opts.check_every) => {}
            () = opts.reload.notified() => {}
        }
        reload(&mut conn, &opts, &tx, None).await;
    }
}

async fn reload(
    conn: &mut ConnectionManager,
    opts: &WatchOptions,
    tx: &watch::Sender<Arc<RuleSnapshot>>,
    notified_at: Option<Instant>,
) {
    match load(conn, opts.who, opts.max_rule_bytes).await {
        Ok(snap) => {
            if **tx.borrow() == snap {
                if notified_at.is_some() {
                    tracing::info!("rule notice received; rules unchanged");
                }
                return;
            }
            snap.report("redis");
            tracing::info!(
                rules = snap.rules.len(),
                invalid = snap.problems.len(),
                cause = if notified_at.is_some() { "notice" } else { "periodic check" },
                load_ms = notified_at.map(|t| t.elapsed().as_millis() as u64),
                "rules changed in Redis; reloading"
            );
            tx.send_replace(Arc::new(snap));
        }
        Err(e) => tracing::warn!(error = %e, "cannot reload rules from Redis; keeping the last good rules"),
    }
}

/// Write rules as HASHes (used by `rules import` and `plan --apply`).
pub async fn write_rule(conn: &mut ConnectionManager, key: &str, rule: &Rule) -> Result<(), RedisError> {
    let _: () = redis::pipe().del(key).ignore().hset_multiple(key, &rule.fields()).ignore().query_async(conn).await?;
    Ok(())
}

/// `traptor-<type>:<id>:<n>`.
pub fn rule_key(t: RuleType, id: u32, n: u64) -> String {
    format!("{}:{n}", collector_prefix(Collector::new(t, id)))
}

/// Delete a key.
pub async fn delete(conn: &mut ConnectionManager, key: &str) -> Result<(), RedisError> {
    let _: () = conn.del(key).await?;
    Ok(())
}
