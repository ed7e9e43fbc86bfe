//! Wiring: runs a pipeline from a [`LoadedConfig`] as a few named steps,
//! supervises it, reloads rules, and shuts it down cleanly.
//!
//! ```text
//! 1. coordination start-up   Redis connection (when rules or [coordination] need it)
//! 2. rules service           first load, watcher ──snapshot──▶ compiler ──ArcSwap<Compiled>──┐
//! 3. topology build          source, sink, dead letters, stages (shared with `validate`)    │
//! 4. coordination tasks      API-key lease, heartbeat, rule stats                           │
//! 5. run                     source ──RawBatch──▶ workers × N ──OutBatch──▶ sink ◀───────────┘
//! 6. drain                   background tasks stopped and awaited, lease released
//! ```
//!
//! Shutdown order: a signal (or the end of the input) stops the source; the
//! workers drain the raw channel and exit; the sink writes what it received,
//! flushes and returns; then the background tasks are cancelled and awaited
//! (the heartbeat deletes its key, the stats flusher writes its last counts).
//!
//! Errors say who is at fault ([`ErrorKind`]): the configuration (exit 78),
//! the outside world at run time (exit 2), or a bug here (exit 70).

pub mod hangup;
mod services;
mod topology;
mod validate;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

pub use services::Background;
pub use topology::{Topology, TopologyParts};
pub use validate::{Validation, validate};

use crate::config::{ConfigError, LoadedConfig};
use crate::coordination::CoordinationError;
use crate::exit::Exit;
use crate::plugins::{StageLoadError, StageSnapshot};
use crate::rules::RulesError;
use crate::sinks::{SinkError, SinkSummary};
use crate::sources::{SourceContext, SourceError, SourceSummary};
use crate::telemetry::{Health, Metrics, Snapshot};

/// Options from the command line that override the file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// `--test`: write to standard output whatever sink is configured.
    pub test_mode: bool,
    /// `--admin ADDR`: the admin listener, over `[admin] listen`.
    pub admin: Option<String>,
}

/// What a finished run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub metrics: Snapshot,
    /// Counters of each stage, in pipeline order: (name, counters).
    pub stages: Vec<(String, StageSnapshot)>,
    pub source: SourceSummary,
    pub sink: SinkSummary,
    pub elapsed: Duration,
}

pub use crate::exit::ErrorKind;

/// Why a run failed; each knows its kind (STYLE 7).
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Plugins(Vec<StageLoadError>),
    /// A stage with `on_error = "fail"` failed.
    #[error("{0}")]
    StageFailed(String),
    #[error(transparent)]
    Coordination(#[from] CoordinationError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The admin listener cannot bind (address taken, not allowed).
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
    #[error("internal error: {0}")]
    Internal(String),
    /// The dedup snapshot cannot be read (or is not one).
    #[error(transparent)]
    Dedup(#[from] crate::pipeline::dedup::DedupError),
    /// The buffer between sources and workers cannot be opened or written.
    #[error(transparent)]
    Buffer(#[from] crate::pipeline::buffer::BufferError),
    /// `id = "auto"`: the id's lease could not be kept; the run stopped so
    /// that no two collectors stream one id (the caller stands by again).
    #[error("the lease on {0} was lost; stopped collecting it")]
    LeaseLost(crate::rules::Collector),
}

impl AppError {
    /// Who is at fault.
    pub fn kind(&self) -> ErrorKind {
        match self {
            AppError::Config(_) | AppError::Plugins(_) | AppError::Dedup(_) => ErrorKind::Config,
            AppError::Rules(RulesError::Io { .. }) => ErrorKind::Config,
            AppError::Rules(RulesError::Redis(crate::redis_conn::RedisError::Url { .. })) => ErrorKind::Config,
            AppError::Rules(RulesError::Redis(_)) => ErrorKind::Runtime,
            AppError::Rules(RulesError::NoConnection) | AppError::Internal(_) => ErrorKind::Internal,
            AppError::StageFailed(_) => ErrorKind::Runtime,
            AppError::Coordination(e) if e.is_config() => ErrorKind::Config,
            AppError::Coordination(_) => ErrorKind::Runtime,
            AppError::Source(e) if e.is_user_error() => ErrorKind::Config,
            AppError::Source(SourceError::Task(_)) | AppError::Sink(SinkError::Task(_)) => ErrorKind::Internal,
            AppError::Sink(e) if e.is_user_error() => ErrorKind::Config,
            AppError::Buffer(e) if e.is_user_error() => ErrorKind::Config,
            AppError::Buffer(crate::pipeline::buffer::BufferError::Task(_)) => ErrorKind::Internal,
            AppError::Admin(e) => e.kind(),
            AppError::Source(_) | AppError::Sink(_) | AppError::Buffer(_) | AppError::LeaseLost(_) => {
                ErrorKind::Runtime
            }
        }
    }

    /// 78 for what the user must fix in the configuration, 2 for runtime
    /// failures, 70 for bugs.
    pub fn exit(&self) -> Exit {
        self.kind().exit()
    }
}

/// Cancel `token` on SIGINT or SIGTERM; a second signal exits at once.
pub fn install_signal_handlers(token: CancellationToken) {
    tokio::spawn(async move {
        let mut count = 0;
        loop {
            wait_for_signal().await;
            count += 1;
            if count == 1 {
                tracing::info!("shutdown requested; draining in-flight posts (signal again to exit now)");
                token.cancel();
            } else {
                tracing::warn!("second signal: exiting without draining");
                Exit::Interrupted.exit_now();
            }
        }
    });
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Run a pipeline until its input ends or `shutdown` is cancelled.
pub async fn run(cfg: LoadedConfig, opts: RunOptions, shutdown: CancellationToken) -> Result<RunReport, AppError> {
    let started = Instant::now();
    let metrics = Arc::new(Metrics::default());
    let mut background = Background::new();
    let mut coordination = services::CoordinationTasks::default();
    let outcome = steps(&cfg, opts, shutdown, &metrics, &mut background, &mut coordination).await;
    // 6. Drain, also after a failed step: background tasks stopped and
    //    awaited (the API-key pool gives its key back as it stops), then the
    //    id's lease given back (the sink has written: a standby's backfill
    //    starts where this run ended).
    background.stop().await;
    if let Some(lease) = coordination.lease.take() {
        lease.release().await;
    }
    let (report, error) = match outcome? {
        Some(outcome) => outcome.finish(&metrics),
        None => (RunReport::empty(metrics.snapshot(), started), None),
    };
    // The summary also when the run failed: what went through is known.
    report.log();
    match error {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// Step 1b's tasks: keep the lease (and count the fleet). Returns the run's
/// token (cancelled by a shutdown or a lost lease) and the one a lost lease
/// alone cancels.
fn keep_lease(
    lease: Option<&crate::coordination::lease::Lease>,
    shutdown: &CancellationToken,
    metrics: &Arc<Metrics>,
    background: &mut Background,
) -> (CancellationToken, CancellationToken) {
    let (run, lost) = (shutdown.child_token(), CancellationToken::new());
    if let Some(lease) = lease {
        let tokens = services::LeaseTokens { run: run.clone(), lost: lost.clone() };
        background.spawn("id lease", lease.clone().keep(tokens, background.token()));
        background.spawn("fleet count", lease.clone().count_fleet_every(metrics.clone(), background.token()));
        metrics.lease_fence.store(lease.fence, std::sync::atomic::Ordering::Relaxed);
    }
    (run, lost)
}

/// Steps 1 and 1b: connect to Redis (when coordination is on), then claim
/// an id (`id = "auto"`). With `id = "auto"` the admin address answers as a
/// standby all along, and is free again when this returns.
async fn connect_and_claim(
    cfg: &LoadedConfig,
    admin: Option<&str>,
    shutdown: &CancellationToken,
) -> Result<(Option<redis::aio::ConnectionManager>, services::Claimed), AppError> {
    let standby = standby_listener(cfg, admin).await?;
    let claimed = async {
        let redis = match services::connect_coordination(cfg, shutdown).await? {
            services::Connected::Yes(redis) => redis,
            services::Connected::ShutDown => return Ok((None, services::Claimed::ShutDown)),
        };
        if let Some((state, _, _)) = &standby {
            state.redis_connected.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let claim = services::claim_id(cfg, redis.as_ref(), shutdown).await?;
        Ok((redis, claim))
    }
    .await;
    if let Some((_, stop, task)) = standby {
        stop.cancel();
        let _ = task.await;
    }
    claimed
}

type Standby = (Arc<crate::admin::StandbyState>, CancellationToken, tokio::task::JoinHandle<()>);

/// Step 1's listener: with `id = "auto"` and an admin address, a standby
/// answers `/health`, `/ready` and `/metrics` there until it holds an id
/// (stop it with the token and await the task: the address is free then).
async fn standby_listener(cfg: &LoadedConfig, addr: Option<&str>) -> Result<Option<Standby>, AppError> {
    let c = &cfg.config;
    let Some(addr) = addr.or(c.admin.as_ref().map(|a| a.listen.as_str())) else { return Ok(None) };
    if !c.traptor.id.is_auto() {
        return Ok(None);
    }
    let state = Arc::new(crate::admin::StandbyState {
        traptor_type: c.traptor.traptor_type,
        settings: crate::admin::AdminSettings::from_config(c.admin.as_ref())?,
        started: Instant::now(),
        redis_connected: std::sync::atomic::AtomicBool::new(false),
    });
    let stop = CancellationToken::new();
    let task = crate::admin::start_standby(addr, state.clone(), stop.clone()).await?;
    Ok(Some((state, stop, task)))
}

/// Step 3½: the admin listener, when the command line or `[admin]` asks.
struct Admin<'a> {
    addr: Option<&'a str>,
    cfg: &'a LoadedConfig,
    who: crate::rules::Collector,
    lease_fence: Option<u64>,
    /// Reloads as SIGHUP does (after a promote).
    trigger: Arc<tokio::sync::Notify>,
}

impl Admin<'_> {
    /// Bind and serve (a taken port is an error now); returns the per-rule
    /// counters the run keeps (for Redis stats, the listener, or both).
    async fn start(
        self,
        topology: &mut Topology,
        metrics: &Arc<Metrics>,
        rules: &services::RulesService,
        cx: &SourceContext,
        background: &mut Background,
    ) -> Result<Option<Arc<crate::telemetry::RuleHits>>, AppError> {
        let c = &self.cfg.config;
        let addr = self.addr.or(c.admin.as_ref().map(|a| a.listen.as_str()));
        let rule_hits = services::rule_hits(self.cfg, addr.is_some());
        let Some(addr) = addr else { return Ok(rule_hits) };
        let settings = crate::admin::AdminSettings::from_config(c.admin.as_ref())?;
        let mut state = topology.admin_state(self.who, metrics, rules, cx, rule_hits.clone(), settings);
        state.lease_fence = self.lease_fence;
        let (path, trigger) = (self.cfg.path.clone(), self.trigger);
        state.promote = Some(Arc::new(move |stage: &str| {
            let plugin = hangup::promote_stage(&path, stage)?;
            trigger.notify_one();
            Ok(plugin)
        }));
        let task = crate::admin::start(addr, Arc::new(state), background.token()).await?;
        background.keep("admin endpoint", task);
        Ok(rule_hits)
    }
}

/// Step 3: the topology, as `validate` builds it (off the reactor).
async fn build_topology(cfg: &LoadedConfig, cx: &SourceContext, test_mode: bool) -> Result<Topology, AppError> {
    let (cfg, cx) = (cfg.clone(), cx.clone());
    tokio::task::spawn_blocking(move || TopologyParts::build(&cfg, &cx, test_mode).into_topology())
        .await
        .map_err(|e| AppError::Internal(format!("building the pipeline: {e}")))?
        .map_err(|errors| {
            errors.into_iter().next().unwrap_or_else(|| AppError::Internal("a part failed without an error".into()))
        })
}

/// Steps 1 to 5. `None`: shut down before the pipeline started.
async fn steps(
    cfg: &LoadedConfig,
    opts: RunOptions,
    shutdown: CancellationToken,
    metrics: &Arc<Metrics>,
    background: &mut Background,
    coordination: &mut services::CoordinationTasks,
) -> Result<Option<topology::Outcome>, AppError> {
    // From here on SIGHUP no longer ends the process.
    let hup = hangup::Listener::new();

    // 1. Coordination start-up: one Redis connection (reconnecting in the
    //    background), waited for with backoff; with `id = "auto"`, stand by
    //    until an id with rules is free, then run as it.
    let (redis, claim) = connect_and_claim(cfg, opts.admin.as_deref(), &shutdown).await?;
    let claimed;
    let (cfg, lease) = match claim {
        services::Claimed::Fixed => (cfg, None),
        services::Claimed::Id(with_id, lease) => {
            claimed = with_id;
            (&*claimed, Some(lease))
        }
        services::Claimed::ShutDown => return Ok(None),
    };
    let c = &cfg.config;
    let who = c.traptor.collector();
    // A lost lease stops this run (not the process): the caller stands by again.
    let (run_token, lost) = keep_lease(lease.as_ref(), &shutdown, metrics, background);

    // 2. Rules: load once (a store that cannot load at all is a configuration
    //    error), then keep watching and recompiling.
    let rules = services::RulesService::start(cfg, who, redis.clone(), metrics.clone(), background).await?;

    // 3. The topology, as `validate` builds it.
    let health = Arc::new(Health::default());
    let (key_pool, pool_end) = services::key_pool(cfg);
    let cx = SourceContext {
        batching: topology::batching(&c.pipeline),
        rules: rules.subscribe(),
        health: health.clone(),
        confirmed: Arc::default(),
        redis: redis.clone(),
        metrics: metrics.clone(),
        max_record_bytes: c.pipeline.max_record_bytes,
        remote_rule_ids: Arc::default(),
        key_pool,
        key_in_use: Arc::default(),
        connection_stats: Arc::default(),
        demand: Arc::default(),
        lease: lease.clone(),
        position: crate::sources::position::CursorStore::None,
    };
    let mut topology = build_topology(cfg, &cx, opts.test_mode).await?;

    // SIGHUP: rules at once; stages rebuilt when only they changed.
    let hangup = hangup::Hangup {
        reload: rules.reload.clone(),
        path: cfg.path.clone(),
        text: cfg.text.clone(),
        stages: topology.stages(),
        metrics: metrics.clone(),
        trigger: Arc::new(tokio::sync::Notify::new()),
    };
    let trigger = hangup.trigger.clone();
    background.spawn("SIGHUP", hangup::on_hangup(hup, hangup, background.token()));

    // The admin listener, when asked for: bound now, so a taken port stops here.
    let admin = Admin { addr: opts.admin.as_deref(), cfg, who, lease_fence: lease.as_ref().map(|l| l.fence), trigger };
    let rule_hits = admin.start(&mut topology, metrics, &rules, &cx, background).await?;

    // 4. Heartbeat, API-key lease, rule stats.
    *coordination =
        services::CoordinationTasks::start(cfg, who, redis.as_ref(), health, pool_end, rule_hits, background).await?;
    coordination.lease = lease;
    // With rules in Redis and none assigned yet, idle until some appear.
    rules.wait_for_any(&c.rules, who, &run_token).await;

    // 5. Run.
    let outcome = topology.run(&rules, coordination.rule_hits.clone(), metrics, run_token.clone()).await;
    if lost.is_cancelled() && !shutdown.is_cancelled() {
        return Err(lease_lost(outcome, metrics, who));
    }
    // Per-rule limits of the rule set in use at the end.
    let compiled = rules.compiled.load();
    if let Some(l) = &compiled.limits {
        for c in l.counts(compiled.matcher.rules()) {
            tracing::info!(rule_id = %c.rule_id, limited = c.limited, sampled_out = c.sampled_out, "rule limits");
        }
    }
    Ok(Some(outcome))
}

/// The run stopped because the id's lease went: its report, then the error.
fn lease_lost(outcome: topology::Outcome, metrics: &Metrics, who: crate::rules::Collector) -> AppError {
    let (report, error) = outcome.finish(metrics);
    report.log();
    if let Some(e) = error {
        tracing::error!(error = %e, "the run also failed");
    }
    AppError::LeaseLost(who)
}

impl RunReport {
    fn empty(metrics: Snapshot, started: Instant) -> RunReport {
        RunReport {
            metrics,
            stages: Vec::new(),
            source: SourceSummary::default(),
            sink: SinkSummary::default(),
            elapsed: started.elapsed(),
        }
    }

    /// The end-of-run summary line (its keys are declared with the metrics,
    /// in `telemetry.rs`), then one line per surprising field.
    fn log(&self) {
        let m = &self.metrics;
        m.log_summary(self.elapsed);
        for (format, fields) in &m.field_surprises {
            for (field, n) in fields {
                tracing::info!(
                    format,
                    field,
                    posts = n,
                    "field of an unexpected type (converted or read as absent; the posts went on)"
                );
            }
        }
    }
}

/// One line per stage with its counters (also when the run failed).
fn log_stages(stages: &[(String, StageSnapshot)]) {
    for (name, s) in stages {
        tracing::info!(
            stage = %name,
            posts = s.posts_in,
            enriched = s.enriched,
            kept = s.kept,
            dropped = s.dropped,
            errors = s.post_errors,
            traps = s.traps,
            timeouts = s.timeouts,
            out_of_memory = s.out_of_memory,
            skipped = s.skipped,
            dead_lettered = s.dead_lettered,
            circuit_opened = s.circuit_opened,
            mean_batch_us = s.latency_sum_us.checked_div(s.batches).unwrap_or(0),
            prepare_ns = s.prepare_ns,
            lower_ns = s.lower_ns,
            guest_ns = s.guest_ns,
            lift_ns = s.lift_ns,
            "stage finished"
        );
    }
}
