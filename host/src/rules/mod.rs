//! Rules: the model (pure) and the stores that hold them.
//!
//! A store yields a [`RuleSnapshot`] (the valid rules plus a located report of
//! the invalid ones) and, while the pipeline runs, a new snapshot whenever its
//! rules change. Compiling a snapshot into a matcher is the caller's business
//! (`app`), so stores never depend on the matcher.
//!
//! Stores are a closed list ([`RulesConfig`]); each store's file holds its
//! keys, checks, loading and watching.

pub mod cover;
pub mod file;
pub mod geometry;
pub mod grid;
pub mod model;
pub mod places;
pub mod redis;
pub mod remote;
pub mod topology;

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use model::{
    BadCollector, Collector, Criterion, LimitExceeded, Rule, RuleError, RuleType, UnknownRuleType, check_limits,
};
pub use remote::RemoteRuleIds;

use crate::component::{BaseDir, Problems, registry};
use crate::redis_conn::RedisError;

registry! {
    /// `[rules]`: where rules come from. `type` selects the store.
    pub enum RulesConfig: dyn RulesComponent {
        /// JSON lines, one rule per line; reloaded when the file changes.
        File = "file" (file::FileRulesConfig),
        /// One HASH per rule at `traptor-<type>:<id>:<n>`; reloaded on a
        /// `<type>:<id>` message on `channel` and every `rule_check_interval_secs`.
        Redis = "redis" (redis::RedisRulesConfig),
    }
}

/// A store's first load.
pub type LoadFuture<'a> = Pin<Box<dyn Future<Output = Result<RuleSnapshot, RulesError>> + Send + 'a>>;

/// What every rule store provides.
pub trait RulesComponent: fmt::Debug + Send + Sync {
    /// Pure checks of the values, run on every load; keys relative to `[rules]`.
    fn check(&self, problems: &mut Problems<'_>);
    /// Make relative paths absolute.
    fn resolve_paths(&mut self, _base: &BaseDir) {}
    /// Files the store reads, by key (no two components may share one).
    fn files(&self) -> Vec<(&'static str, &std::path::Path)> {
        Vec::new()
    }
    /// The Redis server this store reads, if any (coordination defaults to it).
    fn redis_url(&self) -> Option<crate::redis_conn::RedisUrl> {
        None
    }
    /// Where the rules of `who` are, for logs.
    fn describe(&self, who: Collector) -> String;
    /// Load once. `redis` is the coordination connection (a Redis store needs it).
    fn load<'a>(&'a self, who: Collector, redis: Option<&'a mut ::redis::aio::ConnectionManager>) -> LoadFuture<'a>;
    /// Keep watching: every change is published on `tx`, until `shutdown`;
    /// `reload` asks for a load at once (SIGHUP).
    fn watch(
        &self,
        who: Collector,
        redis: Option<::redis::aio::ConnectionManager>,
        tx: watch::Sender<Arc<RuleSnapshot>>,
        reload: Arc<tokio::sync::Notify>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()>;
}

/// One invalid rule and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleProblem {
    /// `path:line` for files, the key for Redis.
    pub location: String,
    pub message: String,
}

impl fmt::Display for RuleProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Everything a store loaded at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleSnapshot {
    /// Shared with the matcher compiled from it (never copied).
    pub rules: Arc<Vec<Rule>>,
    pub problems: Vec<RuleProblem>,
}

impl RuleSnapshot {
    /// Per-connection limit violations of the valid rules.
    pub fn limit_violations(&self) -> Vec<LimitExceeded> {
        check_limits(&self.rules)
    }

    /// Log what was refused and what exceeds a limit (never silently dropped).
    pub fn report(&self, source: &str) {
        for p in &self.problems {
            tracing::warn!(rules = source, location = %p.location, "invalid rule skipped: {}", p.message);
        }
        for v in self.limit_violations() {
            tracing::warn!(rules = source, rule_type = %v.rule_type, "over the per-connection limit: {v}");
        }
    }
}

/// Rules by `rule_id`: a hash table of indices into a rule list, so a
/// million rules cost four bytes (and a control byte) each, not a copy of
/// every id.
#[derive(Debug, Default)]
pub struct IdIndex {
    table: hashbrown::HashTable<u32>,
    hasher: std::hash::RandomState,
}

impl IdIndex {
    pub fn with_capacity(n: usize) -> IdIndex {
        IdIndex { table: hashbrown::HashTable::with_capacity(n), hasher: std::hash::RandomState::new() }
    }

    /// Index every rule; the first of a repeated id wins.
    pub fn of(rules: &[Rule]) -> IdIndex {
        let mut ix = IdIndex::with_capacity(rules.len());
        for i in 0..rules.len() {
            ix.insert(rules, i as u32);
        }
        ix
    }

    /// Add `rules[idx]`; false (and not added) when its id is already there.
    pub fn insert(&mut self, rules: &[Rule], idx: u32) -> bool {
        use std::hash::BuildHasher;
        let id = rules[idx as usize].rule_id();
        let hash = self.hasher.hash_one(id);
        match self.table.entry(
            hash,
            |&i| rules[i as usize].rule_id() == id,
            |&i| self.hasher.hash_one(rules[i as usize].rule_id()),
        ) {
            hashbrown::hash_table::Entry::Occupied(_) => false,
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(idx);
                true
            }
        }
    }

    /// The index of the rule with this id.
    pub fn get(&self, rules: &[Rule], id: &str) -> Option<u32> {
        use std::hash::BuildHasher;
        self.table.find(self.hasher.hash_one(id), |&i| rules[i as usize].rule_id() == id).copied()
    }
}

/// Why a store could not load at all (individual bad rules are [`RuleProblem`]s).
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("cannot read rules file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// A Redis store was given no connection (a bug in the caller).
    #[error("internal: the redis rule store needs a connection")]
    NoConnection,
}
