//! Rules: the model (pure) and the stores that hold them.
//!
//! A store yields a [`RuleSnapshot`] (the valid rules plus a located report of
//! the invalid ones) and, while the pipeline runs, a new snapshot whenever its
//! rules change. Compiling a snapshot into a matcher is the caller's business
//! (`app`), so stores never depend on the matcher.

pub mod file;
pub mod model;
pub mod redis;

use std::fmt;
use std::path::PathBuf;

pub use model::{Criterion, LimitExceeded, Rule, RuleError, RuleType, check_limits};

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
    pub rules: Vec<Rule>,
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

/// Why a store could not load at all (individual bad rules are [`RuleProblem`]s).
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("cannot read rules file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
