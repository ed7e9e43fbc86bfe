//! Wiring: builds the pipeline from a [`LoadedConfig`], supervises it, reloads
//! rules, and shuts it down cleanly.
//!
//! Task tree (all bounded channels):
//!
//! ```text
//! rules watcher ──snapshot──▶ compiler ──ArcSwap<Compiled>──┐
//! source (blocking thread) ──RawBatch──▶ workers × N (blocking) ──OutBatch──▶ sink (blocking)
//! throughput reporter, signal handler
//! ```
//!
//! Shutdown order: a signal (or the end of the input) stops the source; the
//! workers drain the raw channel and exit; the sink writes what it received,
//! flushes and returns; then the background tasks are stopped.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use redis::aio::ConnectionManager;

use crate::config::{ConfigError, CoordinationConfig, EXIT_CONFIG, LoadedConfig, RulesConfig, StageConfig};
use crate::coordination::keys::{self, KeySource};
use crate::coordination::stats::{self, RuleHits, StatsKeys};
use crate::coordination::{CoordinationError, DEFAULT_REDIS_URL, Health, RedisUrl, connect_with_retry, heartbeat};
use crate::envelope::Identity;
use crate::pipeline::{Compiled, Fatal, OutBatch, WorkerContext, WorkerScratch, process_batch};
use crate::plugins::{PluginError, Runtime, Stage, StageSnapshot, StageSpec};
use crate::rules::{self, RuleSnapshot, RulesError};
use crate::sinks::{Sink, SinkError, SinkSummary};
use crate::sources::{Batching, Source, SourceContext, SourceError, SourceSummary};
use crate::telemetry::{self, Metrics, Snapshot};

/// Options from the command line that override the file.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// `--test`: write to standard output whatever sink is configured.
    pub test_mode: bool,
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

/// Why a run failed; each knows its exit code (STYLE 2).
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error("{0}")]
    Unsupported(String),
    #[error("stages[{index}] ({name:?}): {source}")]
    Plugin {
        index: usize,
        name: String,
        #[source]
        source: PluginError,
    },
    #[error("{0}")]
    StageFailed(String),
    #[error(transparent)]
    Redis(CoordinationError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
}

impl AppError {
    /// 78 for what the user must fix in the configuration, 2 for runtime failures.
    pub fn exit_code(&self) -> i32 {
        match self {
            AppError::Config(_) | AppError::Rules(_) | AppError::Unsupported(_) | AppError::Plugin { .. } => {
                EXIT_CONFIG
            }
            AppError::StageFailed(_) => 2,
            AppError::Redis(CoordinationError::Url { .. } | CoordinationError::Invalid(_)) => EXIT_CONFIG,
            AppError::Redis(_) => 2,
            AppError::Source(e) if e.is_user_error() => EXIT_CONFIG,
            AppError::Sink(SinkError::Open { .. } | SinkError::Config { .. }) => EXIT_CONFIG,
            AppError::Source(_) | AppError::Sink(_) => 2,
        }
    }
}

/// Load the rules once. For Redis, `conn` is the connection to use.
async fn load_rules(cfg: &LoadedConfig, conn: Option<&mut ConnectionManager>) -> Result<RuleSnapshot, AppError> {
    let t = cfg.config.traptor.traptor_type;
    match (&cfg.config.rules, conn) {
        (RulesConfig::File { path, .. }, _) => Ok(rules::file::load(path, t)?),
        (RulesConfig::Redis { .. }, Some(conn)) => {
            Ok(rules::redis::load(conn, t, cfg.config.traptor.id).await.map_err(AppError::Redis)?)
        }
        (RulesConfig::Redis { .. }, None) => Err(AppError::Unsupported("internal: no Redis connection".into())),
    }
}

fn rules_name(cfg: &LoadedConfig) -> String {
    match &cfg.config.rules {
        RulesConfig::File { path, .. } => path.display().to_string(),
        RulesConfig::Redis { url, .. } => format!(
            "{} ({}:*)",
            RedisUrl::new(url.clone()),
            rules::redis::collector_prefix(cfg.config.traptor.traptor_type, cfg.config.traptor.id)
        ),
    }
}

/// The Redis server coordination talks to, if coordination is on: always
/// when the rules are in Redis, else when `[coordination]` is present.
fn coordination_url(cfg: &LoadedConfig) -> Option<(RedisUrl, CoordinationConfig)> {
    let c = &cfg.config;
    let rules_url = match &c.rules {
        RulesConfig::Redis { url, .. } => Some(url.clone()),
        RulesConfig::File { .. } => None,
    };
    match (&c.coordination, rules_url) {
        (Some(co), r) => {
            let url = co.url.clone().or(r).unwrap_or_else(|| DEFAULT_REDIS_URL.to_owned());
            Some((RedisUrl::new(url), co.clone()))
        }
        (None, Some(r)) => Some((RedisUrl::new(r), CoordinationConfig::default())),
        (None, None) => None,
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
                std::process::exit(130);
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
    let c = &cfg.config;
    let stages: Arc<[Arc<Stage>]> = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || load_stages(&cfg))
            .await
            .map_err(|e| AppError::Unsupported(format!("stage loading task failed: {e}")))??
            .into()
    };
    let identity = Identity { traptor_type: c.traptor.traptor_type, traptor_id: c.traptor.id };
    let metrics = Arc::new(Metrics::default());
    let background = CancellationToken::new();

    // Coordination: one Redis connection (reconnecting in the background),
    // waited for with backoff at start.
    let coordination = coordination_url(&cfg);
    let mut redis_conn = match &coordination {
        Some((url, _)) => match connect_with_retry(url, None, &shutdown).await.map_err(AppError::Redis)? {
            Some(c) => {
                tracing::info!(redis = %url, "connected to Redis");
                Some(c)
            }
            None => return Err(AppError::Unsupported("shut down while waiting for Redis".into())),
        },
        None => None,
    };
    let health = Arc::new(Health::default());

    // Rules: load once (a store that cannot load at all is a configuration
    // error), then keep watching.
    let snapshot = load_rules(&cfg, redis_conn.as_mut()).await?;
    let rules_origin = rules_name(&cfg);
    snapshot.report(&rules_origin);
    tracing::info!(rules = snapshot.rules.len(), invalid = snapshot.problems.len(), from = %rules_origin, "rules loaded");
    let compiled = Arc::new(ArcSwap::from_pointee(Compiled::new(&snapshot)));
    let (snap_tx, mut snap_rx) = watch::channel(Arc::new(snapshot));
    let mut wait_rx = snap_tx.subscribe();
    let snap_rx_for_source = snap_tx.subscribe();
    match (&c.rules, &redis_conn) {
        (RulesConfig::File { path, poll_interval_ms, debounce_ms }, _) => {
            let opts = rules::file::WatchOptions {
                poll: Duration::from_millis(*poll_interval_ms),
                debounce: Duration::from_millis(*debounce_ms),
            };
            tokio::spawn(rules::file::watch_file(
                path.clone(),
                identity.traptor_type,
                opts,
                snap_tx,
                background.clone(),
            ));
        }
        (RulesConfig::Redis { url, channel, rule_check_interval_secs }, Some(conn)) => {
            let opts = rules::redis::WatchOptions {
                url: RedisUrl::new(url.clone()),
                channel: channel.clone(),
                rule_type: identity.traptor_type,
                id: identity.traptor_id,
                check_every: Duration::from_secs(*rule_check_interval_secs),
            };
            tokio::spawn(rules::redis::watch(conn.clone(), opts, snap_tx, background.clone()));
        }
        (RulesConfig::Redis { .. }, None) => {}
    }
    {
        let compiled = compiled.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            while snap_rx.changed().await.is_ok() {
                let snap = snap_rx.borrow_and_update().clone();
                let built = tokio::task::spawn_blocking(move || Compiled::new(&snap)).await;
                if let Ok(built) = built {
                    let n = built.matcher.rules().len();
                    compiled.store(Arc::new(built));
                    Metrics::add(&metrics.rule_reloads, 1);
                    tracing::info!(rules = n, "matcher swapped");
                }
            }
        });
    }

    // Heartbeat, API-key lease, rule stats.
    let mut lease = None;
    let mut rule_hits = None;
    if let (Some((_, co)), Some(conn)) = (&coordination, &redis_conn) {
        let t = identity.traptor_type.as_str();
        if let Some(k) = &co.api_keys {
            let source = match (&k.hash, &k.file) {
                (Some(h), _) => KeySource::RedisHash(h.clone()),
                (None, Some(f)) => KeySource::File(f.clone()),
                (None, None) => return Err(AppError::Unsupported("coordination.api_keys needs hash or file".into())),
            };
            let owner = format!("{t}:{}:{}", identity.traptor_id, std::process::id());
            let ttl = Duration::from_secs(k.lease_secs);
            let mut announced = false;
            lease = loop {
                match keys::claim(conn, &source, &owner, ttl).await {
                    Ok(Some(l)) => {
                        tracing::info!(api_key = %l.name(), "claimed an API key");
                        break Some(l);
                    }
                    Ok(None) if !announced => {
                        tracing::warn!("every API key is leased by another collector; waiting for one");
                        announced = true;
                    }
                    Ok(None) => {}
                    Err(e @ CoordinationError::Invalid(_)) => return Err(AppError::Redis(e)),
                    Err(e) => tracing::warn!(error = %e, "cannot claim an API key yet"),
                }
                tokio::select! {
                    () = shutdown.cancelled() => break None,
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            };
        }
        let interval = Duration::from_secs(co.heartbeat_interval_secs);
        tokio::spawn(heartbeat::run(
            conn.clone(),
            heartbeat::key(t, identity.traptor_id),
            interval,
            health.clone(),
            lease.clone(),
            background.clone(),
        ));
        if co.stats {
            let hits = Arc::new(RuleHits::default());
            tokio::spawn(stats::run(
                conn.clone(),
                StatsKeys::new(t, identity.traptor_id),
                hits.clone(),
                Duration::from_secs(co.stats_window_secs),
                Duration::from_millis(co.stats_flush_ms),
                background.clone(),
            ));
            rule_hits = Some(hits);
        }
    }

    // With rules in Redis and none assigned yet, idle until some appear.
    if matches!(c.rules, RulesConfig::Redis { .. }) && wait_rx.borrow().rules.is_empty() {
        tracing::info!(collector = %rules_name(&cfg), "waiting for rules");
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                r = wait_rx.changed() => {
                    if r.is_err() || !wait_rx.borrow_and_update().rules.is_empty() {
                        break;
                    }
                }
            }
        }
        // Let the compile task swap in the new matcher before posts flow.
        for _ in 0..100 {
            if !compiled.load().matcher.rules().is_empty() || shutdown.is_cancelled() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::info!("rules assigned; starting");
    }

    let tuning = &c.pipeline;
    let batching =
        Batching { max_records: tuning.batch_size, max_wait: Duration::from_millis(tuning.batch_timeout_ms) };
    let confirmed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let source_ctx = SourceContext {
        rules: snap_rx_for_source.clone(),
        health: health.clone(),
        confirmed: confirmed.clone(),
        redis: redis_conn.clone(),
    };
    let source = Source::build(&c.source, batching, &source_ctx)?;
    source.check()?;
    let sink_cfg = if opts.test_mode { crate::config::SinkConfig::Stdout {} } else { c.sink.clone() };
    let sink = Sink::build(&sink_cfg, identity)?;
    sink.check()?;
    let dead_letter = c.dead_letter.as_ref().map(|d| Sink::build(d, identity)).transpose()?;
    if let Some(d) = &dead_letter {
        d.check()?;
    }
    let fatal = Arc::new(Fatal::new(shutdown.clone()));
    let workers = tuning.workers();
    tracing::info!(source = %source.name(), sink = %sink.name(), workers, "pipeline starting");

    let (raw_tx, raw_rx) = async_channel::bounded(tuning.channel_batches);
    let (out_tx, out_rx) = async_channel::bounded::<OutBatch>(tuning.channel_batches);
    let ctx = WorkerContext {
        identity,
        forward_control: c.traptor.forward_control,
        metrics: metrics.clone(),
        source_name: source.name().into(),
        stages: stages.clone(),
        fatal: fatal.clone(),
        rule_hits: rule_hits.clone(),
        format: source.format(),
    };
    let mut worker_handles = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (rx, tx, ctx, compiled) = (raw_rx.clone(), out_tx.clone(), ctx.clone(), compiled.clone());
        worker_handles.push(tokio::task::spawn_blocking(move || worker_loop(&rx, &tx, &ctx, &compiled)));
    }
    drop((raw_rx, out_tx));

    tokio::spawn(telemetry::report_periodically(
        metrics.clone(),
        Duration::from_secs(c.traptor.stats_interval_secs),
        background.clone(),
    ));
    let sink_task = tokio::spawn(sink.run(out_rx, metrics.clone(), dead_letter, confirmed.clone(), shutdown.clone()));
    let source_result = source.run(raw_tx, shutdown.clone()).await;
    for h in worker_handles {
        let _ = h.await;
    }
    let sink_result = sink_task.await.map_err(|e| SinkError::Task(e.to_string()))?;
    background.cancel();
    if let Some(l) = &lease {
        match l.release().await {
            Ok(()) => tracing::info!(api_key = %l.name(), "API key released"),
            Err(e) => tracing::warn!(error = %e, "cannot release the API key lease; it expires by itself"),
        }
    }
    // Give the stats flusher its final write and the heartbeat its DEL.
    if redis_conn.is_some() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let sink_summary = sink_result?;
    let source_summary = source_result?;
    let stage_report: Vec<(String, StageSnapshot)> =
        stages.iter().map(|s| (s.name.to_string(), s.metrics.snapshot())).collect();
    for (name, s) in &stage_report {
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
            "stage finished"
        );
    }
    if let Some(e) = fatal.error() {
        return Err(AppError::StageFailed(e));
    }
    let report = RunReport {
        stages: stage_report,
        metrics: metrics.snapshot(),
        source: source_summary,
        sink: sink_summary,
        elapsed: started.elapsed(),
    };
    let m = &report.metrics;
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    tracing::info!(
        records = m.records_in,
        posts = m.posts,
        matched = m.posts_matched,
        unmatched = m.posts_unmatched,
        control = m.control.values().sum::<u64>(),
        malformed = m.malformed,
        written = m.records_out,
        seconds = format!("{secs:.2}"),
        posts_per_sec = (m.posts as f64 / secs).round() as u64,
        in_mib_per_sec = format!("{:.1}", m.bytes_in as f64 / secs / 1_048_576.0),
        out_mib_per_sec = format!("{:.1}", m.bytes_out as f64 / secs / 1_048_576.0),
        "pipeline finished"
    );
    Ok(report)
}

/// One CPU worker: take a batch, process it with the current rules, pass it on.
/// A panic while processing a batch is contained: the batch's records are
/// counted as lost, logged, and the worker continues with fresh buffers.
fn worker_loop(
    rx: &async_channel::Receiver<crate::pipeline::RawBatch>,
    tx: &async_channel::Sender<OutBatch>,
    ctx: &WorkerContext,
    compiled: &ArcSwap<Compiled>,
) {
    let mut scratch = WorkerScratch::default();
    while let Ok(batch) = rx.recv_blocking() {
        if ctx.fatal.is_raised() {
            return;
        }
        let current = compiled.load_full();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            process_batch(ctx, &current, &batch, &mut scratch)
        }));
        let out = match result {
            Ok(Ok(out)) => out,
            Ok(Err(fatal)) => {
                ctx.fatal.raise(fatal.0);
                return;
            }
            Err(_) => {
                Metrics::add(&ctx.metrics.worker_panics, 1);
                tracing::error!(
                    batch = batch.seq,
                    records = batch.len(),
                    "internal error while processing a batch; its records were not written"
                );
                scratch = WorkerScratch::default();
                OutBatch::with_seq(batch.seq)
            }
        };
        if tx.send_blocking(out).is_err() {
            return;
        }
    }
}

/// The spec of one configured stage (paths already resolved).
pub fn stage_spec(s: &StageConfig) -> StageSpec {
    StageSpec {
        name: s.name.clone(),
        plugin: s.plugin.clone(),
        config_json: crate::plugins::config_json(&s.config),
        on_error: s.on_error,
        memory_limit_bytes: usize::try_from(s.memory_limit_mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX),
        timeout: Duration::from_millis(s.timeout_ms),
        init_timeout: Duration::from_millis(s.init_timeout_ms),
        grant_clock: s.grants.clock,
        grant_env: s.grants.env.clone(),
        grant_dirs: s.grants.dirs.clone(),
        breaker_failures: s.circuit_breaker_failures,
        breaker_cooldown: Duration::from_secs(s.circuit_breaker_cooldown_secs),
    }
}

/// Load, describe and initialise every stage (compiling or using the cache).
pub fn load_stages(cfg: &LoadedConfig) -> Result<Vec<Arc<Stage>>, AppError> {
    let c = &cfg.config;
    if c.stages.is_empty() {
        return Ok(Vec::new());
    }
    let cache = c.pipeline.plugin_cache_dir.clone().or_else(Runtime::default_cache_dir);
    let runtime = Runtime::new(cache).map_err(|source| AppError::Plugin { index: 0, name: String::new(), source })?;
    let mut out = Vec::with_capacity(c.stages.len());
    for (index, s) in c.stages.iter().enumerate() {
        let started = Instant::now();
        let stage = Stage::load(&runtime, stage_spec(s)).map_err(|source| AppError::Plugin {
            index,
            name: s.name.clone(),
            source,
        })?;
        tracing::info!(
            stage = %s.name,
            plugin = %stage.description.name,
            version = %stage.description.version,
            cached = stage.component().from_cache,
            ms = started.elapsed().as_millis() as u64,
            "stage loaded"
        );
        out.push(Arc::new(stage));
    }
    Ok(out)
}

/// The outcome of `validate`.
#[derive(Debug, Default)]
pub struct Validation {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    pub notes: Vec<String>,
}

impl Validation {
    pub fn exit_code(&self) -> i32 {
        if self.errors.is_empty() { 0 } else { EXIT_CONFIG }
    }
}

/// Check a pipeline file and everything it names, without running it.
pub async fn validate(path: &Path) -> Validation {
    let mut v = Validation::default();
    let cfg = match LoadedConfig::load(path) {
        Ok(c) => c,
        Err(ConfigError::Invalid { path, problems }) => {
            v.errors.extend(problems.iter().map(|p| format!("{}: {p}", path.display())));
            return v;
        }
        Err(e) => {
            v.errors.push(e.to_string());
            return v;
        }
    };
    let c = &cfg.config;
    v.notes.push(format!("pipeline {}: traptor {}:{}", path.display(), c.traptor.traptor_type, c.traptor.id));
    let batching = Batching { max_records: 1, max_wait: Duration::from_millis(1) };
    match Source::build(&c.source, batching, &SourceContext::detached()) {
        Ok(source) => match source.check() {
            Ok(()) => v.notes.push(format!("source: {}", source.name())),
            Err(e) => v.errors.push(format!("source.path: {e}")),
        },
        Err(e) => v.errors.push(e.to_string()),
    }
    let mut conn = None;
    if let Some((url, _)) = coordination_url(&cfg) {
        match crate::coordination::connect(&url, None).await {
            Ok(c) => {
                v.notes.push(format!("redis: {url} reachable"));
                conn = Some(c);
            }
            Err(e) => v.errors.push(format!("rules.url: {e}")),
        }
    }
    let loaded = match (&c.rules, &mut conn) {
        (RulesConfig::Redis { .. }, None) => None,
        (_, conn) => Some(load_rules(&cfg, conn.as_mut()).await),
    };
    match loaded {
        None => {}
        Some(Ok(snap)) => {
            let origin = rules_name(&cfg);
            v.notes.push(format!("rules: {} valid in {origin}", snap.rules.len()));
            for p in &snap.problems {
                v.errors.push(format!("invalid rule at {p}"));
            }
            for l in snap.limit_violations() {
                v.errors.push(format!("{origin}: {l}"));
            }
            if snap.rules.is_empty() {
                v.warnings.push(format!("{origin} holds no valid rule: every post will be \"Not Found\""));
            }
        }
        Some(Err(e)) => v.errors.push(format!("rules: {e}")),
    }
    let identity = Identity { traptor_type: c.traptor.traptor_type, traptor_id: c.traptor.id };
    match Sink::build(&c.sink, identity).and_then(|s| s.check().map(|()| s)) {
        Ok(sink) => v.notes.push(format!("sink: {}", sink.name())),
        Err(e) => v.errors.push(format!("sink: {e}")),
    }
    if !c.stages.is_empty() {
        let cache = c.pipeline.plugin_cache_dir.clone().or_else(Runtime::default_cache_dir);
        match Runtime::new(cache) {
            Err(e) => v.errors.push(e.to_string()),
            Ok(runtime) => {
                for (i, s) in c.stages.iter().enumerate() {
                    match Stage::load(&runtime, stage_spec(s)) {
                        Ok(stage) => v.notes.push(format!(
                            "stages[{i}] {:?}: {} {} ({:?}), ABI {}, config accepted",
                            s.name,
                            stage.description.name,
                            stage.description.version,
                            stage.description.kind,
                            crate::plugins::ABI_VERSION
                        )),
                        Err(e) => v.errors.push(format!("stages[{i}] ({:?}): {e}", s.name)),
                    }
                }
            }
        }
    }
    if let Some(d) = &c.dead_letter {
        match Sink::build(d, identity).and_then(|s| s.check().map(|()| s)) {
            Ok(s) => v.notes.push(format!("dead letters: {}", s.name())),
            Err(e) => v.errors.push(format!("dead_letter.path: {e}")),
        }
    }
    v
}
