//! Coordination of many collectors through Redis, compatible with the
//! original traptor's keys (DESIGN §3):
//!
//! | key | what | written by |
//! |---|---|---|
//! | `traptor-<type>:<id>:<n>` | one rule (HASH) | `rules import` / `rules plan --apply` |
//! | channel `traptor-notify`, message `<type>:<id>` | "reload your rules" | the same, `rules notify` |
//! | `<type>:<id>:heartbeat` | RFC 3339 time, TTL 1.5 × interval | [`heartbeat`] |
//! | `stats:<type>:<id>:<rule_id>` | ZSET of match times, rolling window | [`stats`] |
//! | `limit:<type>:<id>` | ZSET member = time, score = Twitter's undelivered count | [`stats`] |
//! | `traptor-apikey-lease:<name>` | which collector holds API key `<name>` | [`keys`] |
//! | `traptor-lease:<type>:<id>` | `<owner> <fence>`: who holds id `<id>` (`id = "auto"`) | [`lease`] |
//! | `traptor-lease-fence:<type>:<id>` | the last fencing number handed out for the id | [`lease`] |
//! | `traptor-position:<type>:<id>:<source>` | the source's last confirmed position, written under the lease | [`lease`] |
//!
//! Redis is never on the hot path: workers count in memory, a flusher writes
//! in pipelines, and when Redis is away the counts are kept as numbers and
//! written when it returns. Collection continues on the last good rules.

pub mod heartbeat;
pub mod keys;
pub mod lease;
pub mod plan;
pub mod rules_admin;
pub mod stats;

use std::path::PathBuf;

use serde::Deserialize;

use crate::component::{BaseDir, Problems, yes};
use crate::redis_conn::RedisError;

/// `[coordination]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinationConfig {
    /// Redis server (default: the rules' server, with its TLS and password
    /// settings, else `redis://127.0.0.1:6379`).
    #[serde(default)]
    pub url: Option<String>,
    /// `rediss://`: PEM file of the CA that signed the server's certificate.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// `rediss://`: accept any certificate. Tests only.
    #[serde(default)]
    pub tls_insecure: bool,
    /// The password, `{ env = "…" }` or `{ file = "…" }`, instead of one in the URL.
    #[serde(default)]
    pub password: Option<crate::secret::SecretRef>,
    /// Heartbeat period (at least 5); the key lives 1.5 × as long.
    #[serde(default = "default_heartbeat_secs")]
    pub heartbeat_interval_secs: u64,
    /// Write per-rule match counts and limit notices.
    #[serde(default = "yes")]
    pub stats: bool,
    /// Rolling window of the per-rule counters.
    #[serde(default = "default_stats_window_secs")]
    pub stats_window_secs: u64,
    /// How often counts are written.
    #[serde(default = "default_stats_flush_ms")]
    pub stats_flush_ms: u64,
    /// Claim one API key from a pool for this collector.
    #[serde(default)]
    pub api_keys: Option<ApiKeysConfig>,
    /// `[traptor] id = "auto"`: how long a collector's claim on its id lives
    /// without renewal (renewed every third of it). A standby takes a dead
    /// collector's id within twice this.
    #[serde(default = "default_id_lease_secs")]
    pub lease_secs: u64,
}

impl Default for CoordinationConfig {
    fn default() -> Self {
        CoordinationConfig {
            url: None,
            tls_ca_file: None,
            tls_insecure: false,
            password: None,
            heartbeat_interval_secs: default_heartbeat_secs(),
            stats: true,
            stats_window_secs: default_stats_window_secs(),
            stats_flush_ms: default_stats_flush_ms(),
            api_keys: None,
            lease_secs: default_id_lease_secs(),
        }
    }
}

/// `[coordination.api_keys]`: exactly one of `hash` and `file`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeysConfig {
    /// Redis hash: field = key name, value = JSON object of credential fields.
    #[serde(default)]
    pub hash: Option<String>,
    /// JSON-lines file of `{"name": …, credential fields …}`.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Lease length; renewed with every heartbeat.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
}

fn default_heartbeat_secs() -> u64 {
    10
}
fn default_stats_window_secs() -> u64 {
    900
}
fn default_stats_flush_ms() -> u64 {
    1000
}
fn default_lease_secs() -> u64 {
    30
}
fn default_id_lease_secs() -> u64 {
    10
}

impl CoordinationConfig {
    /// Pure checks; keys relative to `[coordination]`.
    pub fn check(&self, p: &mut Problems<'_>) {
        p.range("heartbeat_interval_secs", self.heartbeat_interval_secs, heartbeat::MIN_INTERVAL_SECS, 3600);
        p.range("stats_window_secs", self.stats_window_secs, 1, 604_800);
        p.range("stats_flush_ms", self.stats_flush_ms, 10, 3_600_000);
        p.range("lease_secs", self.lease_secs, 1, 3600);
        if let Some(k) = &self.api_keys {
            if k.hash.is_some() == k.file.is_some() {
                p.add("api_keys", "give exactly one of `hash` and `file`");
            }
            if k.lease_secs > 86_400 {
                p.add("api_keys.lease_secs", format!("must be at most 86400 (got {})", k.lease_secs));
            }
            if k.lease_secs <= self.heartbeat_interval_secs {
                p.add(
                    "api_keys.lease_secs",
                    "must be longer than the heartbeat interval (the lease is renewed with each beat)",
                );
            }
        }
    }

    pub fn resolve_paths(&mut self, base: &BaseDir) {
        if let Some(ca) = &mut self.tls_ca_file {
            base.fix(ca);
        }
        if let Some(p) = &mut self.password {
            base.fix_secret(p);
        }
        if let Some(ApiKeysConfig { file: Some(f), .. }) = &mut self.api_keys {
            base.fix(f);
        }
    }
}

/// Why a coordination task or command failed.
#[derive(Debug, thiserror::Error)]
pub enum CoordinationError {
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// Data in Redis or a keys file that cannot be used (a configuration error).
    #[error("{0}")]
    Invalid(String),
}

impl From<redis::RedisError> for CoordinationError {
    fn from(e: redis::RedisError) -> Self {
        CoordinationError::Redis(e.into())
    }
}

impl CoordinationError {
    /// True when the user must fix a URL or the data (exit 78), not wait.
    pub fn is_config(&self) -> bool {
        matches!(self, CoordinationError::Invalid(_) | CoordinationError::Redis(RedisError::Url { .. }))
    }
}
