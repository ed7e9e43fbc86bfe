//! The services a run needs beside its topology: the Redis connection, the
//! rules (load, watch, compile, swap), the coordination tasks (lease,
//! heartbeat, stats), and the background tasks that are stopped and awaited
//! at the end.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use redis::aio::ConnectionManager;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::AppError;
use crate::config::Coordination;
use crate::config::LoadedConfig;
use crate::coordination::keys::{self, KeySource, PoolSettings};
use crate::coordination::lease::{self, Lease};
use crate::coordination::stats::{self, StatsKeys};
use crate::coordination::{ApiKeysConfig, CoordinationError, heartbeat};
use crate::key_pool::{KeyPoolEnd, KeyPoolHandle};
use crate::pipeline::Compiled;
use crate::redis_conn::connect_with_retry;
use crate::rules::{Collector, RuleSnapshot, RulesConfig};
use crate::telemetry::RuleHits;
use crate::telemetry::{Health, Metrics};

/// How long stopping may wait for one background task.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Tasks that live as long as the run: stopped by one token, then awaited
/// (never slept for), each within [`STOP_WAIT`].
#[derive(Debug)]
pub struct Background {
    token: CancellationToken,
    tasks: Vec<(&'static str, tokio::task::JoinHandle<()>)>,
}

impl Default for Background {
    fn default() -> Self {
        Background::new()
    }
}

impl Background {
    pub fn new() -> Background {
        Background { token: CancellationToken::new(), tasks: Vec::new() }
    }

    /// The token the tasks stop on.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.push((name, tokio::spawn(task)));
    }

    /// Keep a task spawned elsewhere.
    pub fn keep(&mut self, name: &'static str, handle: tokio::task::JoinHandle<()>) {
        self.tasks.push((name, handle));
    }

    /// Cancel every task and wait for each to finish its last step.
    pub async fn stop(self) {
        self.token.cancel();
        for (name, handle) in self.tasks {
            match tokio::time::timeout(STOP_WAIT, handle).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(task = name, error = %e, "background task failed"),
                Err(_) => tracing::warn!(task = name, "background task did not stop in time; left behind"),
            }
        }
    }
}

/// The outcome of step 1.
#[derive(Debug)]
pub(super) enum Connected {
    /// Connected when coordination is on (`None`: it is off).
    Yes(Option<ConnectionManager>),
    /// Shut down while waiting for Redis.
    ShutDown,
}

/// Step 1: connect to the coordination server, retrying with backoff.
pub(super) async fn connect_coordination(
    cfg: &LoadedConfig,
    shutdown: &CancellationToken,
) -> Result<Connected, AppError> {
    let Some(Coordination { url, .. }) = &cfg.coordination else { return Ok(Connected::Yes(None)) };
    match connect_with_retry(url, None, shutdown).await.map_err(CoordinationError::from)? {
        Some(c) => {
            tracing::info!(redis = %url, "connected to Redis");
            Ok(Connected::Yes(Some(c)))
        }
        None => Ok(Connected::ShutDown),
    }
}

pub(super) use crate::coordination::lease::LeaseTokens;

/// What `id = "auto"` came to.
pub(super) enum Claimed {
    /// The id is a number: nothing to claim.
    Fixed,
    /// The configuration with the claimed id, and its lease.
    Id(Box<LoadedConfig>, Lease),
    /// Shut down while standing by.
    ShutDown,
}

/// Step 1b: with `id = "auto"`, stand by until an id with rules is free and
/// claim it by lease.
pub(super) async fn claim_id(
    cfg: &LoadedConfig,
    redis: Option<&ConnectionManager>,
    shutdown: &CancellationToken,
) -> Result<Claimed, AppError> {
    if !cfg.config.traptor.id.is_auto() {
        return Ok(Claimed::Fixed);
    }
    let (Some(conn), Some(co)) = (redis, &cfg.coordination) else {
        // The pure checks refuse `auto` without rules in Redis.
        return Err(AppError::Internal("id = \"auto\" without a Redis connection".into()));
    };
    let ttl = Duration::from_secs(co.settings.lease_secs);
    let t = cfg.config.traptor.traptor_type;
    let Some(lease) = lease::claim(conn, t, &lease::owner(), ttl, shutdown).await? else {
        return Ok(Claimed::ShutDown);
    };
    let mut with_id = cfg.clone();
    with_id.config.traptor.id = crate::config::IdSetting::Fixed(lease.who.id);
    with_id.config.traptor.claimed = true;
    crate::telemetry::tag_logs(lease.who);
    Ok(Claimed::Id(Box::new(with_id), lease))
}

/// Step 2: the current rules, compiled and swapped atomically on change.
#[derive(Debug)]
pub struct RulesService {
    snapshots: watch::Receiver<Arc<RuleSnapshot>>,
    pub compiled: Arc<ArcSwap<Compiled>>,
    /// Wakes the store to load at once (SIGHUP).
    pub reload: Arc<tokio::sync::Notify>,
}

impl RulesService {
    pub(super) async fn start(
        cfg: &LoadedConfig,
        who: Collector,
        mut redis: Option<ConnectionManager>,
        metrics: Arc<Metrics>,
        background: &mut Background,
    ) -> Result<RulesService, AppError> {
        let store = cfg.config.rules.component();
        let started = std::time::Instant::now();
        let snapshot = store.load(who, redis.as_mut()).await?;
        let load_ms = started.elapsed().as_millis() as u64;
        let origin = store.describe(who);
        snapshot.report(&origin);
        let compiling = std::time::Instant::now();
        let tags = Arc::new(cfg.config.limits.clone());
        // An X v2 source attributes posts by rule id: the id index is built
        // with the matcher, off the workers (built on first use, the first
        // post after a reload of 1M rules would wait ~100 ms for it).
        let by_id = cfg.config.sources.iter().any(|s| s.source.component().format() == crate::post::Format::XV2);
        let compile = move |snap: &RuleSnapshot, tags: &crate::pipeline::limits::LimitsConfig| {
            let c = Compiled::new(snap, tags);
            if by_id {
                c.matcher.index_ids();
            }
            c
        };
        let compiled = Arc::new(ArcSwap::from_pointee(compile(&snapshot, &tags)));
        tracing::info!(
            rules = snapshot.rules.len(),
            invalid = snapshot.problems.len(),
            from = %origin,
            load_ms,
            compile_ms = compiling.elapsed().as_millis() as u64,
            "rules loaded"
        );
        let (tx, snapshots) = watch::channel(Arc::new(snapshot));
        let reload = Arc::new(tokio::sync::Notify::new());
        background.keep("rules watcher", store.watch(who, redis, tx, reload.clone(), background.token()));
        let mut changes = snapshots.clone();
        let (swap, stop) = (compiled.clone(), background.token());
        background.spawn("rules compiler", async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    r = changes.changed() => if r.is_err() { return },
                }
                let snap = changes.borrow_and_update().clone();
                let started = std::time::Instant::now();
                let tags = tags.clone();
                let built = tokio::task::spawn_blocking(move || compile(&snap, &tags)).await;
                if let Ok(built) = built {
                    let n = built.matcher.rules().len();
                    swap.store(Arc::new(built));
                    metrics.rules_reload.observe_n(started.elapsed(), 1);
                    Metrics::add(&metrics.rule_reloads, 1);
                    tracing::info!(rules = n, compile_ms = started.elapsed().as_millis() as u64, "matcher swapped");
                }
            }
        });
        Ok(RulesService { snapshots, compiled, reload })
    }

    /// A receiver of every new snapshot (sources that sync rules with an API).
    pub fn subscribe(&self) -> watch::Receiver<Arc<RuleSnapshot>> {
        self.snapshots.clone()
    }

    /// With rules in Redis and none assigned yet, wait until some appear and
    /// are compiled (or until shutdown).
    pub(super) async fn wait_for_any(&self, rules: &RulesConfig, who: Collector, shutdown: &CancellationToken) {
        if !matches!(rules, RulesConfig::Redis(_)) || !self.snapshots.borrow().rules.is_empty() {
            return;
        }
        tracing::info!(collector = %rules.component().describe(who), "waiting for rules");
        let mut rx = self.snapshots.clone();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                r = rx.changed() => {
                    if r.is_err() || !rx.borrow_and_update().rules.is_empty() {
                        break;
                    }
                }
            }
        }
        // Let the compiler swap in the new matcher before posts flow.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while self.compiled.load().matcher.rules().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
        tracing::info!("rules assigned; starting");
    }
}

/// Step 4: what coordination runs beside the pipeline.
#[derive(Debug, Default)]
pub(super) struct CoordinationTasks {
    pub rule_hits: Option<Arc<RuleHits>>,
    /// The id's lease (`id = "auto"`), given back after the drain.
    pub lease: Option<Lease>,
}

/// Per-rule match counts: written to Redis (coordination stats), kept in
/// memory for `/api/rules` (admin listener), both, or neither (`None`).
pub(super) fn rule_hits(cfg: &LoadedConfig, admin: bool) -> Option<Arc<RuleHits>> {
    let to_redis = cfg.coordination.as_ref().is_some_and(|co| co.settings.stats);
    (to_redis || admin).then(|| Arc::new(RuleHits::new(to_redis, admin)))
}

/// The source's end of the API-key pool, and the end its task will run, when
/// `[coordination.api_keys]` is configured (and coordination is on).
pub(super) fn key_pool(cfg: &LoadedConfig) -> (Option<KeyPoolHandle>, Option<KeyPoolEnd>) {
    match &cfg.coordination {
        Some(co) if co.settings.api_keys.is_some() => {
            let (handle, end) = crate::key_pool::channel();
            (Some(handle), Some(end))
        }
        _ => (None, None),
    }
}

impl CoordinationTasks {
    pub(super) async fn start(
        cfg: &LoadedConfig,
        who: Collector,
        redis: Option<&ConnectionManager>,
        health: Arc<Health>,
        key_pool: Option<KeyPoolEnd>,
        rule_hits: Option<Arc<RuleHits>>,
        background: &mut Background,
    ) -> Result<CoordinationTasks, AppError> {
        let (Some(Coordination { settings: co, .. }), Some(conn)) = (&cfg.coordination, redis) else {
            return Ok(CoordinationTasks { rule_hits, lease: None });
        };
        let interval = Duration::from_secs(co.heartbeat_interval_secs);
        if let (Some(k), Some(end)) = (&co.api_keys, key_pool) {
            let settings = pool_settings(k, who, interval)?;
            // No heartbeat before a key is held (set here, before either task runs).
            health.set_unhealthy(keys::WAITING_FOR_KEY);
            let pool = keys::run_pool(conn.clone(), settings, end, health.clone(), background.token());
            background.spawn("API-key pool", pool);
        }
        let beat = heartbeat::run(conn.clone(), heartbeat::key(who), interval, health, background.token());
        background.spawn("heartbeat", beat);
        if let Some(hits) = rule_hits.clone().filter(|_| co.stats) {
            let flush = stats::run(
                conn.clone(),
                StatsKeys::new(who),
                hits.clone(),
                Duration::from_secs(co.stats_window_secs),
                Duration::from_millis(co.stats_flush_ms),
                background.token(),
            );
            background.spawn("rule stats", flush);
        }
        Ok(CoordinationTasks { rule_hits, lease: None })
    }
}

/// Where the pool is and who holds its leases.
fn pool_settings(k: &ApiKeysConfig, who: Collector, renew_every: Duration) -> Result<PoolSettings, AppError> {
    let source = match (&k.hash, &k.file) {
        (Some(h), _) => KeySource::RedisHash(h.clone()),
        (None, Some(f)) => KeySource::File(f.clone()),
        // The pure checks refuse this; say so if it ever gets here.
        (None, None) => return Err(AppError::Internal("coordination.api_keys has neither hash nor file".into())),
    };
    Ok(PoolSettings {
        source,
        owner: format!("{who}:{}", std::process::id()),
        ttl: Duration::from_secs(k.lease_secs),
        renew_every,
    })
}
