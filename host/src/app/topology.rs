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
use crate::pipeline::buffer::{BufferConfig, BufferError, DiskQueue, Merge};
use crate::pipeline::dedup::{Dedup, DedupError};
use crate::pipeline::{Fatal, PipelineTuning, SourceInfo, StageSet, WorkerContext, spawn_workers};
use crate::plugins::{Stage, StageLoadError, StageSnapshot, stages};
use crate::rules::Collector;
use crate::rules::RemoteRuleIds;
use crate::sinks::{Sink, SinkError, SinkSummary, stdout::StdoutConfig};
use crate::sinks::{SinkComponent, SinkConfig};
use crate::sources::position::CursorStore;
use crate::sources::{Batching, Source, SourceContext, SourceError, SourceSummary};
use crate::telemetry::RuleHits;
use crate::telemetry::{self, Metrics};

/// Batching of the source, from `[pipeline]`.
pub(super) fn batching(tuning: &PipelineTuning) -> Batching {
    Batching { max_records: tuning.batch_size, max_wait: Duration::from_millis(tuning.batch_timeout_ms) }
}

/// Every part of a topology, each built (or refused) on its own, so
/// `validate` can report on all of them at once.
#[derive(Debug)]
pub struct TopologyParts {
    pub identity: Collector,
    /// Each source: the section it is configured in, its name for
    /// `traptor.source` (`[[sources]]` only), and the source or why not.
    pub sources: Vec<PartSource>,
    pub sink: Result<Sink, SinkError>,
    pub dead_letter: Option<Result<Sink, SinkError>>,
    pub stages: Result<Vec<Arc<Stage>>, Vec<StageLoadError>>,
    pub dedup: Result<Option<Arc<Dedup>>, DedupError>,
    /// The buffer's directory and settings when it is on (opened, and
    /// locked, by [`TopologyParts::into_topology`], not by `validate`).
    pub buffer: Result<Option<(std::path::PathBuf, BufferConfig)>, BufferError>,
    settings: RunSettings,
}

/// What the parts of a run share, read once from the configuration and the
/// source context (the parts, then the topology, carry it to the workers).
#[derive(Debug)]
struct RunSettings {
    tuning: PipelineTuning,
    forward_control: bool,
    stats_interval: Duration,
    /// `[traptor] provenance`.
    provenance: bool,
    /// What the source learnt of server-side rule ids (the same as the source
    /// context's).
    remote_rule_ids: Arc<RemoteRuleIds>,
    /// Shared by the workers and the live sources (see `batch::Demand`).
    demand: Arc<crate::batch::Demand>,
    /// The source holds a connection (readiness waits for it).
    source_live: bool,
}

/// One source of the pipeline, as built.
#[derive(Debug)]
pub struct PartSource {
    /// `source` or `sources[i]`.
    pub section: String,
    /// `traptor.source` (`[[sources]]` only).
    pub tag: Option<String>,
    /// Its name (`[[sources]]` name, else its type): provenance.
    pub label: String,
    pub source: Result<Source, SourceError>,
    /// The checkpoint the buffer confirms to it once the sink has written.
    confirmed: Arc<AtomicU64>,
    /// The pool key it connects with (provenance).
    key_in_use: Arc<crate::key_pool::KeyInUse>,
    /// Holds a connection to a streaming API, and its counters.
    live: bool,
    connection: Arc<crate::telemetry::ConnectionStats>,
}

impl TopologyParts {
    /// Build every part (secrets read, files checked, plugins compiled or
    /// taken from the cache). Blocking: run it off the reactor.
    pub fn build(cfg: &LoadedConfig, cx: &SourceContext, test_mode: bool) -> TopologyParts {
        let c = &cfg.config;
        let identity = c.traptor.collector();
        let sources = c
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| {
                // The first source keeps the run's context (the admin
                // endpoint reads its connection); the others get their own
                // checkpoint and connection counters.
                let position = CursorStore::for_collector(cx.lease.as_ref(), cx.redis.as_ref(), identity, s.label());
                let cx = if i == 0 {
                    SourceContext { position, ..cx.clone() }
                } else {
                    SourceContext {
                        confirmed: Arc::default(),
                        connection_stats: Arc::default(),
                        key_in_use: Arc::default(),
                        position,
                        ..cx.clone()
                    }
                };
                PartSource {
                    section: if s.listed { format!("sources[{i}]") } else { "source".into() },
                    tag: s.listed.then(|| s.label().to_owned()),
                    label: s.label().to_owned(),
                    source: Source::build(&s.source, &cx).and_then(|s| s.check().map(|()| s)),
                    confirmed: cx.confirmed.clone(),
                    key_in_use: cx.key_in_use.clone(),
                    live: s.source.component().live(),
                    connection: cx.connection_stats.clone(),
                }
            })
            .collect();
        let sink = if test_mode { StdoutConfig::default().build(identity) } else { Sink::build(&c.sink, identity) };
        let sink = sink.and_then(|s| s.check().map(|()| s));
        let dead_letter =
            c.dead_letter.as_ref().map(|d: &SinkConfig| Sink::build(d, identity).and_then(|s| s.check().map(|()| s)));
        let stages = stages::load_all(&c.stages, c.pipeline.plugin_cache_dir.clone(), &cfg.path);
        let dedup = c
            .dedup
            .as_ref()
            .map(|d| {
                let claimed = c.traptor.claimed && d.snapshot.is_some();
                let snapshot = d.snapshot_path(identity).map(|p| if claimed { per_id_file(p, identity) } else { p });
                Dedup::open_with(d, snapshot, c.buffer().is_some()).map(Arc::new)
            })
            .transpose();
        let buffer = c
            .buffer()
            .map(|b| {
                let claimed = c.traptor.claimed && b.dir.is_some();
                let dir = b
                    .dir_for(identity)
                    .map(|d| if claimed { d.join(format!("{}-{}", identity.rule_type, identity.id)) } else { d });
                dir.map(|d| (d, b)).ok_or(BufferError::NoDir)
            })
            .transpose();
        TopologyParts {
            identity,
            sources,
            buffer,
            sink,
            dead_letter,
            stages,
            dedup,
            settings: RunSettings {
                tuning: c.pipeline.clone(),
                forward_control: c.traptor.forward_control,
                stats_interval: Duration::from_secs(c.traptor.stats_interval_secs),
                provenance: c.traptor.provenance,
                remote_rule_ids: cx.remote_rule_ids.clone(),
                demand: cx.demand.clone(),
                source_live: c.any_live_source(),
            },
        }
    }

    /// A topology if every part was built, else every error.
    pub fn into_topology(self) -> Result<Topology, Vec<AppError>> {
        let mut errors = Vec::new();
        // Every configured source's name (built or not): the buffer's table.
        let labels: Vec<String> = self.sources.iter().map(|s| s.label.clone()).collect();
        let mut sources = Vec::new();
        for s in self.sources {
            match s.source {
                Ok(source) => sources.push(Running {
                    source,
                    tag: s.tag,
                    label: s.label,
                    confirmed: s.confirmed,
                    key_in_use: s.key_in_use,
                    live: s.live,
                    connection: s.connection,
                }),
                Err(e) => errors.push(e.into()),
            }
        }
        let queue = match self.buffer {
            Ok(Some((dir, cfg))) => match DiskQueue::open(&dir, &cfg).and_then(|q| q.with_sources(&labels)) {
                Ok(q) => {
                    let (records, bytes) = q.queued();
                    tracing::info!(dir = %dir.display(), overflow = cfg.overflow.as_str(), max_bytes = cfg.max_bytes, queued = records, queued_bytes = bytes, "buffer open");
                    Some(q)
                }
                Err(e) => {
                    errors.push(e.into());
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                errors.push(e.into());
                None
            }
        };
        let stages = self.stages.map_err(|e| errors.push(AppError::Plugins(e))).ok();
        let sink = self.sink.map_err(|e| errors.push(e.into())).ok();
        let dead_letter = self.dead_letter.transpose().map_err(|e| errors.push(e.into())).ok();
        let dedup = self.dedup.map_err(|e| errors.push(e.into())).ok();
        match (stages, sink, dead_letter, dedup) {
            (Some(stages), Some(sink), Some(dead_letter), Some(dedup)) if errors.is_empty() => Ok(Topology {
                identity: self.identity,
                sources,
                queue,
                sink,
                dead_letter,
                stages: Arc::new(ArcSwap::from_pointee(StageSet::new(0, stages))),
                dedup,
                settings: self.settings,
                recent: None,
            }),
            _ => Err(errors),
        }
    }
}

/// A pipeline, built and ready to run.
#[derive(Debug)]
pub struct Topology {
    pub identity: Collector,
    /// Each source, its `traptor.source` name, and the checkpoint the
    /// buffer confirms to it.
    sources: Vec<Running>,
    /// The buffer's disk queue, when it is on.
    queue: Option<DiskQueue>,
    sink: Sink,
    dead_letter: Option<Sink>,
    /// Replaced as a whole when SIGHUP finds only `[[stages]]` changed.
    stages: Arc<ArcSwap<StageSet>>,
    dedup: Option<Arc<Dedup>>,
    settings: RunSettings,
    /// The last posts decoded, when the admin listener is on.
    recent: Option<Arc<crate::pipeline::recent::RecentPosts>>,
}

/// How the parts of a run ended.
#[derive(Debug)]
pub struct Outcome {
    source: Result<SourceSummary, SourceError>,
    buffer: Result<(), BufferError>,
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
        &mut self,
        who: crate::rules::Collector,
        metrics: &Arc<Metrics>,
        rules: &RulesService,
        cx: &SourceContext,
        rule_hits: Option<Arc<RuleHits>>,
        settings: crate::admin::AdminSettings,
    ) -> crate::admin::AdminState {
        let recent = Arc::new(crate::pipeline::recent::RecentPosts::new(settings.recent_posts));
        self.recent = Some(recent.clone());
        crate::admin::AdminState {
            recent,
            settings,
            promote: None,
            heavy: tokio::sync::Semaphore::new(1),
            collector: who,
            lease_fence: None,
            key_in_use: cx.key_in_use.clone(),
            sources: self
                .sources
                .iter()
                .map(|r| crate::admin::SourcePart {
                    name: r.tag.clone().unwrap_or_else(|| r.source.name()),
                    live: r.live,
                    connection: r.connection.clone(),
                })
                .collect(),
            sink_down_since: std::sync::Mutex::default(),
            metrics: metrics.clone(),
            stages: self.stages.clone(),
            compiled: rules.compiled.clone(),
            health: cx.health.clone(),
            connection: cx.connection_stats.clone(),
            source: self.source_names(),
            source_live: self.settings.source_live,
            sink: self.sink.name(),
            redis: cx.redis.clone(),
            rule_hits,
            started: Instant::now(),
            history: std::sync::Mutex::default(),
        }
    }

    /// The sources' names, for logs and the admin endpoint.
    fn source_names(&self) -> String {
        self.sources.iter().map(|r| r.tag.clone().unwrap_or_else(|| r.source.name())).collect::<Vec<_>>().join(", ")
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
        let workers = self.settings.tuning.workers();
        let names = self.source_names();
        tracing::info!(source = %names, sink = %self.sink.name(), workers, buffer = self.queue.is_some(), "pipeline starting");
        let started = Instant::now();
        let n = self.settings.tuning.channel_batches;
        let (merged_tx, merged_rx) = async_channel::bounded(n);
        let (raw_tx, raw_rx) = async_channel::bounded(n);
        let (out_tx, out_rx) = crate::sinks::channel(n);
        let infos: Arc<[SourceInfo]> = self
            .sources
            .iter()
            .map(|r| SourceInfo {
                name: r.source.name().into(),
                label: r.label.as_str().into(),
                format: r.source.format(),
                tag: r.tag.as_deref().map(Arc::from),
                key_in_use: r.key_in_use.clone(),
            })
            .collect();
        let first = infos.first().cloned();
        let ctx = WorkerContext {
            identity: self.identity,
            forward_control: self.settings.forward_control,
            metrics: metrics.clone(),
            source_name: first.as_ref().map_or_else(|| names.as_str().into(), |f| f.name.clone()),
            stages: self.stages.clone(),
            fatal: fatal.clone(),
            rule_hits,
            format: first.as_ref().map_or(crate::post::Format::TwitterV1, |f| f.format),
            remote_rule_ids: self.settings.remote_rule_ids.clone(),
            demand: self.settings.demand.clone(),
            dedup: self.dedup.clone(),
            source_tag: first.and_then(|f| f.tag),
            sources: infos,
            provenance: self
                .settings
                .provenance
                .then(|| crate::pipeline::provenance::collector_json(self.identity).into()),
            recent: self.recent.clone(),
        };
        let handles = spawn_workers(workers, &raw_rx, &out_tx, &ctx, &rules.compiled);
        let snapshots = self.dedup.clone().map(|d| tokio::spawn(save_every(d, DEDUP_SAVE_EVERY)));
        drop((raw_rx, out_tx));
        let reporter = tokio::spawn(telemetry::report_periodically(
            metrics.clone(),
            self.settings.stats_interval,
            shutdown.child_token(),
        ));
        let written = Arc::new(AtomicU64::new(0));
        let sink_task =
            tokio::spawn(self.sink.run(out_rx, metrics.clone(), self.dead_letter, written.clone(), shutdown.clone()));
        let merge = Merge {
            input: merged_rx,
            output: raw_tx,
            queue: self.queue,
            written,
            checkpoints: self.sources.iter().map(|r| r.confirmed.clone()).collect(),
            metrics: metrics.clone(),
            batch_size: self.settings.tuning.batch_size,
            dedup: self.dedup.clone(),
        };
        let merge_task = tokio::spawn(merge.run(shutdown.clone()));
        let source = run_sources(self.sources, merged_tx, &shutdown).await;
        let settle = merge_task.await.unwrap_or_else(|e| Err(BufferError::Task(e.to_string())));
        let mut internal = None;
        for h in handles {
            if let Err(e) = h.await {
                internal = Some(format!("a worker failed: {e}"));
            }
        }
        let sink = sink_task.await.unwrap_or_else(|e| Err(SinkError::Task(e.to_string())));
        let buffer = settle.and_then(|s| s.finish());
        reporter.abort();
        if let Some(t) = snapshots {
            t.abort();
        }
        if let Some(d) = self.dedup.clone() {
            d.confirmations_written().await;
            save_dedup(d).await;
        }
        let stages = self.stages.load().stages.iter().map(|s| (s.name.to_string(), s.metrics.snapshot())).collect();
        Outcome { source, buffer, sink, internal, fatal: fatal.error(), stages, started }
    }
}

/// A file the collector id owns, named per id when the id was claimed by
/// lease (`dedup.bin` → `dedup.bin.track-3`; a buffer directory gets a
/// `track-3` directory inside): what one id kept is never read back as
/// another's.
fn per_id_file(path: std::path::PathBuf, who: crate::rules::Collector) -> std::path::PathBuf {
    let mut p = path.into_os_string();
    p.push(format!(".{}-{}", who.rule_type, who.id));
    std::path::PathBuf::from(p)
}

/// A source ready to run, with what the rest of the pipeline shares with it.
#[derive(Debug)]
struct Running {
    source: Source,
    /// `traptor.source` (`[[sources]]` only).
    tag: Option<String>,
    /// Its name (`[[sources]]` name, else its type): provenance.
    label: String,
    /// The checkpoint the buffer confirms once the sink has written.
    confirmed: Arc<AtomicU64>,
    /// The pool key it connects with (provenance).
    key_in_use: Arc<crate::key_pool::KeyInUse>,
    live: bool,
    connection: Arc<crate::telemetry::ConnectionStats>,
}

/// Run every source into `merged` (one source directly; several each
/// through a channel of its own that stamps its index on its batches).
/// Returns their summed counts, or the first error.
async fn run_sources(
    sources: Vec<Running>,
    merged: async_channel::Sender<crate::batch::RawBatch>,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<SourceSummary, SourceError> {
    if sources.len() == 1 {
        let Some(Running { source, .. }) = sources.into_iter().next() else { return Ok(SourceSummary::default()) };
        // On the runtime's workers, beside the connection task it reads
        // from (a wake-up between two tasks of one worker costs no thread
        // switch); run here, on the thread that blocks on the app, every
        // chunk read was a cross-thread wake-up: at 30,000 posts/s that
        // thread spent its time in futex and eventfd calls.
        return tokio::spawn(source.run(merged, shutdown.clone()))
            .await
            .unwrap_or_else(|e| Err(SourceError::Task(e.to_string())));
    }
    let mut tasks = Vec::new();
    for (i, Running { source, .. }) in sources.into_iter().enumerate() {
        let (tx, rx) = async_channel::bounded::<crate::batch::RawBatch>(2);
        let merged = merged.clone();
        let index = i as u16;
        let forward = tokio::spawn(async move {
            while let Ok(mut b) = rx.recv().await {
                b.source = index;
                if merged.send(b).await.is_err() {
                    return;
                }
            }
        });
        let name = source.name();
        let run = tokio::spawn(source.run(tx, shutdown.clone()));
        tasks.push((name, run, forward));
    }
    drop(merged);
    let mut total = SourceSummary::default();
    let mut first_error = None;
    for (name, run, forward) in tasks {
        let r = run.await.unwrap_or_else(|e| Err(SourceError::Task(e.to_string())));
        let _ = forward.await;
        match r {
            Ok(s) => {
                total.records += s.records;
                total.bytes += s.bytes;
            }
            Err(e) => {
                tracing::error!(source = %name, error = %e, "source failed");
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(total), Err)
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
            .or(self.buffer.err().map(AppError::from))
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
