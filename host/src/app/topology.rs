//! The topology of one pipeline: its source, sink, dead-letter destination
//! and stages, built once from the file. `run` runs it; `validate` builds the
//! same parts and reports on each.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::services::RulesService;
use super::{AppError, RunReport};
use crate::config::LoadedConfig;
use crate::coordination::stats::RuleHits;
use crate::envelope::Identity;
use crate::pipeline::dedup::{Dedup, DedupError};
use crate::pipeline::{Fatal, PipelineTuning, StageSet, WorkerContext, spawn_workers};
use crate::plugins::{Stage, StageLoadError, StageSnapshot, stages};
use crate::rules::RemoteRuleIds;
use crate::sinks::{Sink, SinkError, SinkSummary, stdout::StdoutConfig};
use crate::sinks::{SinkComponent, SinkConfig};
use crate::sources::{Batching, Source, SourceContext, SourceError, SourceSummary};
use crate::telemetry::{self, Metrics};

/// Batching of the source, from `[pipeline]`.
pub(super) fn batching(tuning: &PipelineTuning) -> Batching {
    Batching { max_records: tuning.batch_size, max_wait: Duration::from_millis(tuning.batch_timeout_ms) }
}

/// Every part of a topology, each built (or refused) on its own, so
/// `validate` can report on all of them at once.
#[derive(Debug)]
pub struct TopologyParts {
    pub identity: Identity,
    pub source: Result<Source, SourceError>,
    pub sink: Result<Sink, SinkError>,
    pub dead_letter: Option<Result<Sink, SinkError>>,
    pub stages: Result<Vec<Arc<Stage>>, Vec<StageLoadError>>,
    pub dedup: Result<Option<Arc<Dedup>>, DedupError>,
    tuning: PipelineTuning,
    forward_control: bool,
    stats_interval: Duration,
    confirmed: Arc<AtomicU64>,
    remote_rule_ids: Arc<RemoteRuleIds>,
    source_live: bool,
}

impl TopologyParts {
    /// Build every part (secrets read, files checked, plugins compiled or
    /// taken from the cache). Blocking: run it off the reactor.
    pub fn build(cfg: &LoadedConfig, cx: &SourceContext, test_mode: bool) -> TopologyParts {
        let c = &cfg.config;
        let identity = Identity { traptor_type: c.traptor.traptor_type, traptor_id: c.traptor.id };
        let source = Source::build(&c.source, cx).and_then(|s| s.check().map(|()| s));
        let sink = if test_mode { StdoutConfig::default().build(identity) } else { Sink::build(&c.sink, identity) };
        let sink = sink.and_then(|s| s.check().map(|()| s));
        let dead_letter =
            c.dead_letter.as_ref().map(|d: &SinkConfig| Sink::build(d, identity).and_then(|s| s.check().map(|()| s)));
        let stages = stages::load_all(&c.stages, c.pipeline.plugin_cache_dir.clone(), &cfg.path);
        let dedup = c
            .dedup
            .as_ref()
            .map(|d| Dedup::open(d, d.snapshot_path(identity.traptor_type.as_str(), identity.traptor_id)).map(Arc::new))
            .transpose();
        TopologyParts {
            identity,
            source,
            sink,
            dead_letter,
            stages,
            dedup,
            tuning: c.pipeline.clone(),
            forward_control: c.traptor.forward_control,
            stats_interval: Duration::from_secs(c.traptor.stats_interval_secs),
            confirmed: cx.confirmed.clone(),
            remote_rule_ids: cx.remote_rule_ids.clone(),
            source_live: c.source.component().live(),
        }
    }

    /// A topology if every part was built, else every error.
    pub fn into_topology(self) -> Result<Topology, Vec<AppError>> {
        let mut errors = Vec::new();
        let source = self.source.map_err(|e| errors.push(e.into())).ok();
        let stages = self.stages.map_err(|e| errors.push(AppError::Plugins(e))).ok();
        let sink = self.sink.map_err(|e| errors.push(e.into())).ok();
        let dead_letter = self.dead_letter.transpose().map_err(|e| errors.push(e.into())).ok();
        let dedup = self.dedup.map_err(|e| errors.push(e.into())).ok();
        match (source, stages, sink, dead_letter, dedup) {
            (Some(source), Some(stages), Some(sink), Some(dead_letter), Some(dedup)) if errors.is_empty() => {
                Ok(Topology {
                    identity: self.identity,
                    source,
                    sink,
                    dead_letter,
                    stages: Arc::new(ArcSwap::from_pointee(StageSet::new(0, stages))),
                    dedup,
                    tuning: self.tuning,
                    forward_control: self.forward_control,
                    stats_interval: self.stats_interval,
                    confirmed: self.confirmed,
                    remote_rule_ids: self.remote_rule_ids,
                    source_live: self.source_live,
                })
            }
            _ => Err(errors),
        }
    }
}

/// A pipeline, built and ready to run.
#[derive(Debug)]
pub struct Topology {
    pub identity: Identity,
    source: Source,
    sink: Sink,
    dead_letter: Option<Sink>,
    /// Replaced as a whole when SIGHUP finds only `[[stages]]` changed.
    stages: Arc<ArcSwap<StageSet>>,
    dedup: Option<Arc<Dedup>>,
    tuning: PipelineTuning,
    forward_control: bool,
    stats_interval: Duration,
    /// The checkpoint the sink confirms and the source reads (the same as
    /// the source context's).
    confirmed: Arc<AtomicU64>,
    /// What the source learnt of server-side rule ids (the same as the source
    /// context's).
    remote_rule_ids: Arc<RemoteRuleIds>,
    /// The source holds a connection (readiness waits for it).
    source_live: bool,
}

/// How the parts of a run ended.
#[derive(Debug)]
pub struct Outcome {
    source: Result<SourceSummary, SourceError>,
    sink: Result<SinkSummary, SinkError>,
    /// A task that panicked, if any.
    internal: Option<String>,
    fatal: Option<String>,
    stages: Vec<(String, StageSnapshot)>,
    /// When records started to flow (rule loading and plugin compilation are
    /// before it, so the summary's rates are the pipeline's own).
    started: Instant,
}

impl Topology {
    /// What the admin endpoints read of this pipeline.
    pub(super) fn admin_state(
        &self,
        who: crate::rules::Collector,
        metrics: &Arc<Metrics>,
        rules: &RulesService,
        cx: &SourceContext,
        rule_hits: Option<Arc<RuleHits>>,
    ) -> crate::admin::AdminState {
        crate::admin::AdminState {
            traptor_type: who.rule_type.as_str(),
            traptor_id: who.id,
            metrics: metrics.clone(),
            stages: self.stages.clone(),
            compiled: rules.compiled.clone(),
            health: cx.health.clone(),
            connection: cx.connection_stats.clone(),
            source: self.source.name(),
            source_live: self.source_live,
            sink: self.sink.name(),
            redis: cx.redis.clone(),
            rule_hits,
            started: Instant::now(),
            history: std::sync::Mutex::default(),
        }
    }

    /// The stage set, for SIGHUP to replace.
    pub(super) fn stages(&self) -> Arc<ArcSwap<StageSet>> {
        self.stages.clone()
    }

    /// Run until the source ends or `shutdown`: workers on the blocking pool,
    /// the sink on its own task, the source here. Returns once the sink has
    /// written (or refused) everything the workers passed on.
    pub(super) async fn run(
        self,
        rules: &RulesService,
        rule_hits: Option<Arc<RuleHits>>,
        metrics: &Arc<Metrics>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Outcome {
        let fatal = Arc::new(Fatal::new(shutdown.clone()));
        let workers = self.tuning.workers();
        tracing::info!(source = %self.source.name(), sink = %self.sink.name(), workers, "pipeline starting");
        let started = Instant::now();
        let (raw_tx, raw_rx) = async_channel::bounded(self.tuning.channel_batches);
        let (out_tx, out_rx) = async_channel::bounded(self.tuning.channel_batches);
        let ctx = WorkerContext {
            identity: self.identity,
            forward_control: self.forward_control,
            metrics: metrics.clone(),
            source_name: self.source.name().into(),
            stages: self.stages.clone(),
            fatal: fatal.clone(),
            rule_hits,
            format: self.source.format(),
            remote_rule_ids: self.remote_rule_ids.clone(),
            dedup: self.dedup.clone(),
        };
        let handles = spawn_workers(workers, &raw_rx, &out_tx, &ctx, &rules.compiled);
        let snapshots = self.dedup.clone().map(|d| tokio::spawn(save_every(d, DEDUP_SAVE_EVERY)));
        drop((raw_rx, out_tx));
        let reporter =
            tokio::spawn(telemetry::report_periodically(metrics.clone(), self.stats_interval, shutdown.child_token()));
        let sink_task =
            tokio::spawn(self.sink.run(out_rx, metrics.clone(), self.dead_letter, self.confirmed, shutdown.clone()));
        let source = self.source.run(raw_tx, shutdown.clone()).await;
        let mut internal = None;
        for h in handles {
            if let Err(e) = h.await {
                internal = Some(format!("a worker failed: {e}"));
            }
        }
        let sink = sink_task.await.unwrap_or_else(|e| Err(SinkError::Task(e.to_string())));
        reporter.abort();
        if let Some(t) = snapshots {
            t.abort();
        }
        if let Some(d) = self.dedup.clone() {
            save_dedup(d).await;
        }
        let stages = self.stages.load().stages.iter().map(|s| (s.name.to_string(), s.metrics.snapshot())).collect();
        Outcome { source, sink, internal, fatal: fatal.error(), stages, started }
    }
}

/// How often the dedup ids are written while the pipeline runs.
const DEDUP_SAVE_EVERY: Duration = Duration::from_secs(30);

async fn save_every(d: Arc<Dedup>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        save_dedup(d.clone()).await;
    }
}

/// Write the dedup snapshot off the reactor; a failure is logged (the run
/// goes on; a restart would let through what it forgot).
async fn save_dedup(d: Arc<Dedup>) {
    match tokio::task::spawn_blocking(move || d.save()).await {
        Ok(Ok(n)) => tracing::debug!(ids = n, "dedup snapshot written"),
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot write the dedup snapshot"),
        Err(e) => tracing::warn!(error = %e, "dedup snapshot task failed"),
    }
}

impl Outcome {
    /// The report, and the error that ended the run if one did — by
    /// precedence: a bug, a fatal stage, the sink, the source. The report
    /// counts what went through either way.
    pub(super) fn finish(self, metrics: &Metrics) -> (RunReport, Option<AppError>) {
        super::log_stages(&self.stages);
        let (sink, sink_error) = match self.sink {
            Ok(s) => (s, None),
            Err(e) => (SinkSummary::default(), Some(AppError::from(e))),
        };
        let (source, source_error) = match self.source {
            Ok(s) => (s, None),
            Err(e) => (SourceSummary::default(), Some(AppError::from(e))),
        };
        let error = self
            .internal
            .map(AppError::Internal)
            .or(self.fatal.map(AppError::StageFailed))
            .or(sink_error)
            .or(source_error);
        let report = RunReport {
            metrics: metrics.snapshot(),
            stages: self.stages,
            source,
            sink,
            elapsed: self.started.elapsed(),
        };
        (report, error)
    }
}
