//! What every worker shares: the compiled rules, the stage set, the run's
//! fatal flag and the context a batch is processed in.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::matcher::Matcher;
use crate::plugins::Stage;
use crate::post::Format;
use crate::rules::{Collector, RemoteRuleIds, RuleSnapshot};
use crate::telemetry::{Metrics, RuleHits};

/// A rule set compiled for the hot path; swapped atomically on reload.
#[derive(Debug)]
pub struct Compiled {
    pub matcher: Matcher,
    /// Per-rule rate limits and sampling (`None`: no rule has any).
    pub limits: Option<super::limits::Limiters>,
    /// `provenance.rules` of this set, made on first use (a hash of every
    /// rule: not paid by a pipeline with provenance off).
    provenance: std::sync::OnceLock<String>,
}

impl Compiled {
    pub fn new(snapshot: &RuleSnapshot, tags: &super::limits::LimitsConfig) -> Compiled {
        let limits = super::limits::Limiters::build(&snapshot.rules, tags);
        Compiled { matcher: Matcher::new(snapshot.rules.clone()), limits, provenance: std::sync::OnceLock::new() }
    }

    /// `{"count":N,"sha256":"…"}` of the rule set (see [`super::provenance`]).
    pub fn rules_provenance(&self) -> &str {
        self.provenance.get_or_init(|| super::provenance::rules_json(self.matcher.rules()))
    }
}

/// Set once when a stage with `on_error = "fail"` fails: stops the pipeline.
#[derive(Debug, Default)]
pub struct Fatal {
    error: Mutex<Option<String>>,
    token: CancellationToken,
}

impl Fatal {
    /// `token` is cancelled on the first fatal error (it stops the source).
    pub fn new(token: CancellationToken) -> Fatal {
        Fatal { error: Mutex::new(None), token }
    }
    pub fn raise(&self, msg: String) {
        if let Ok(mut e) = self.error.lock()
            && e.is_none()
        {
            tracing::error!(error = %msg, "stopping the pipeline");
            *e = Some(msg);
        }
        self.token.cancel();
    }
    pub fn error(&self) -> Option<String> {
        self.error.lock().ok().and_then(|e| e.clone())
    }
    pub fn is_raised(&self) -> bool {
        self.error().is_some()
    }
}

/// What every worker shares.
#[derive(Debug, Clone)]
pub struct WorkerContext {
    pub identity: Collector,
    pub forward_control: bool,
    pub metrics: Arc<Metrics>,
    /// Names the input in error reports (a file path, "synthetic" …).
    pub source_name: Arc<str>,
    /// Stages in pipeline order; replaced as a whole (SIGHUP), taken once per
    /// batch so a batch never sees two sets.
    pub stages: Arc<ArcSwap<StageSet>>,
    pub fatal: Arc<Fatal>,
    /// Per-rule match counts (Redis stats, `/api/rules`), when either is on.
    pub rule_hits: Option<Arc<RuleHits>>,
    /// The wire format of the source's messages.
    pub format: Format,
    /// Server-side rule ids → local rules (X v2 `matching_rules`).
    pub remote_rule_ids: Arc<RemoteRuleIds>,
    /// Workers say when they wait for a batch (live sources read it).
    pub demand: Arc<crate::batch::Demand>,
    /// `[dedup]`: posts seen before are dropped (counted).
    pub dedup: Option<Arc<super::dedup::Dedup>>,
    /// Written to each post's `traptor.source` (`[[sources]]` only).
    pub source_tag: Option<Arc<str>>,
    /// Every source of the pipeline, by the index a batch carries: the
    /// fields above (`source_name`, `format`, `source_tag`) are taken from
    /// here for each batch when there are several.
    pub sources: Arc<[SourceInfo]>,
    /// `provenance.collector` (`{"type","id","host"}`), or `None` when
    /// `[traptor] provenance = false`.
    pub provenance: Option<Arc<str>>,
    /// The last posts decoded, for the admin listener (when it is on).
    pub recent: Option<Arc<super::recent::RecentPosts>>,
}

/// What the workers know of one source.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    /// For logs (`x_filtered_stream https://api.x.com`).
    pub name: Arc<str>,
    /// As the pipeline names it (`[[sources]]` name, else its type).
    pub label: Arc<str>,
    pub format: Format,
    pub tag: Option<Arc<str>>,
    /// The pool key the source connects with now.
    pub key_in_use: Arc<crate::key_pool::KeyInUse>,
}

impl WorkerContext {
    /// The context for a batch of source `i` (itself when there is one source).
    pub(super) fn for_source(&self, i: u16) -> std::borrow::Cow<'_, WorkerContext> {
        match self.sources.get(usize::from(i)) {
            Some(s) if self.sources.len() > 1 => std::borrow::Cow::Owned(WorkerContext {
                source_name: s.name.clone(),
                format: s.format,
                source_tag: s.tag.clone(),
                ..self.clone()
            }),
            _ => std::borrow::Cow::Borrowed(self),
        }
    }
}

/// The stages of the pipeline, as one swappable set.
#[derive(Debug)]
pub struct StageSet {
    /// Bumped on every swap: workers drop their instances of the old set.
    pub generation: u64,
    pub stages: Arc<[Arc<Stage>]>,
    /// `provenance.stages` of this set.
    pub provenance: String,
}

impl Default for StageSet {
    fn default() -> StageSet {
        StageSet::new(0, Vec::new())
    }
}

impl StageSet {
    pub fn new(generation: u64, stages: impl Into<Arc<[Arc<Stage>]>>) -> StageSet {
        let stages = stages.into();
        let provenance = super::provenance::stages_json(&stages);
        StageSet { generation, stages, provenance }
    }
}
