//! The pipeline file (DESIGN §7): one TOML document naming a source, a rule
//! store, ordered stages and a sink.
//!
//! Every table denies unknown keys, so a typo is an error that names the key and
//! its line, never a silently ignored setting. Checking happens in two phases
//! (as in Vector): [`PipelineConfig::check`] is pure and runs on every load;
//! `app::validate` adds what needs the environment (files, rules, plugins).
//!
//! Relative paths in the file are resolved against the file's own directory, so
//! a pipeline runs the same from any working directory.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::rules::RuleType;

mod secret;
pub use secret::{Secret, SecretRef};

/// Exit code for an invalid configuration (sysexits `EX_CONFIG`).
pub const EXIT_CONFIG: i32 = 78;

/// A whole pipeline file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Who this collector is.
    pub traptor: TraptorConfig,
    /// Where posts come from.
    pub source: SourceConfig,
    /// Where rules come from.
    pub rules: RulesConfig,
    /// WebAssembly stages, run in order between matching and the sink.
    #[serde(default)]
    pub stages: Vec<StageConfig>,
    /// Where enriched posts go.
    pub sink: SinkConfig,
    /// Where posts go that a stage could not process (`on_error = "dead_letter"`):
    /// the post with its `traptor` object and a `dead_letter` member naming the
    /// stage and the error.
    #[serde(default)]
    pub dead_letter: Option<SinkConfig>,
    /// Tuning of the in-process pipeline.
    #[serde(default)]
    pub pipeline: PipelineTuning,
    /// Heartbeats, rule stats and API-key leases in Redis (on by default when
    /// the rules are in Redis).
    #[serde(default)]
    pub coordination: Option<CoordinationConfig>,
}

/// `[coordination]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinationConfig {
    /// Redis server (default: the rules' server, else `redis://127.0.0.1:6379`).
    #[serde(default)]
    pub url: Option<String>,
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
}

impl Default for CoordinationConfig {
    fn default() -> Self {
        CoordinationConfig {
            url: None,
            heartbeat_interval_secs: default_heartbeat_secs(),
            stats: true,
            stats_window_secs: default_stats_window_secs(),
            stats_flush_ms: default_stats_flush_ms(),
            api_keys: None,
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
fn default_channel() -> String {
    "traptor-notify".into()
}
fn default_redis_url() -> String {
    crate::coordination::DEFAULT_REDIS_URL.into()
}
fn default_rule_check_secs() -> u64 {
    60
}

/// `[traptor]`: the collector's identity, as the original's `TRAPTOR_TYPE`/`TRAPTOR_ID`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraptorConfig {
    /// `track`, `follow` or `locations`.
    #[serde(rename = "type")]
    pub traptor_type: RuleType,
    /// Collector number; with the type it names the Redis keys (`traptor-<type>:<id>`).
    #[serde(default)]
    pub id: u32,
    /// Forward non-post stream messages (limit, delete, …) to the sink unchanged.
    #[serde(default = "yes")]
    pub forward_control: bool,
    /// Period of the throughput line in the log; 0 turns it off.
    #[serde(default = "default_stats_secs")]
    pub stats_interval_secs: u64,
}

fn yes() -> bool {
    true
}
fn default_stats_secs() -> u64 {
    10
}

/// `[source]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// Replay a JSON-lines file (`.gz` too), one message per line.
    Replay {
        /// The file to read.
        path: PathBuf,
        /// Posts per second; 0 (the default) reads as fast as the pipeline takes them.
        #[serde(default)]
        rate: f64,
        /// Keep reading as the file grows (like `tail -f`) instead of ending at its end.
        #[serde(default)]
        follow: bool,
        /// What the lines are: `twitter_v1` (default), `x_v2` or `jetstream`.
        #[serde(default = "default_format")]
        format: crate::post::Format,
    },
    /// X API v2 filtered stream, with rule sync.
    XFilteredStream {
        /// API root (tests and enterprise endpoints point elsewhere).
        #[serde(default = "default_x_base")]
        base_url: String,
        /// `{ env = "X_BEARER_TOKEN" }` or `{ file = "…" }`.
        bearer_token: SecretRef,
        /// No data and no keep-alive for this long: reconnect.
        #[serde(default = "default_stall_secs")]
        stall_timeout_secs: u64,
        /// Make the app's stream rules equal to the local rules.
        #[serde(default = "yes")]
        sync_rules: bool,
        /// The tier's rule count.
        #[serde(default = "default_x_max_rules")]
        max_rules: usize,
        /// The tier's rule length (characters).
        #[serde(default = "default_x_max_rule_length")]
        max_rule_length: usize,
        /// Post ids remembered to drop redeliveries after a reconnect.
        #[serde(default = "default_dedup_window")]
        dedup_window: usize,
        /// Multiplies every reconnect wait (tests only; keep 1).
        #[serde(default = "default_scale")]
        backoff_scale: f64,
    },
    /// Twitter API v1.1 `statuses/filter` (and endpoints that speak it).
    TwitterV1Filter {
        /// API root.
        #[serde(default = "default_v1_base")]
        base_url: String,
        /// OAuth 1.0a credentials, each `{ env = "…" }` or `{ file = "…" }`.
        consumer_key: SecretRef,
        consumer_secret: SecretRef,
        access_token: SecretRef,
        access_token_secret: SecretRef,
        /// No data and no keep-alive for this long: reconnect.
        #[serde(default = "default_v1_stall_secs")]
        stall_timeout_secs: u64,
        /// `delimited=length` framing.
        #[serde(default = "yes")]
        delimited: bool,
        /// A rule change reconnects at most this often (changes in between coalesce).
        #[serde(default = "default_min_rule_reconnect_secs")]
        min_rule_reconnect_secs: u64,
        /// Multiplies every reconnect wait (tests only; keep 1).
        #[serde(default = "default_scale")]
        backoff_scale: f64,
    },
    /// A Kafka consumer group (enrichment workers; at-least-once).
    Kafka {
        /// `host:port,host:port`.
        brokers: String,
        /// Topics to read.
        topics: Vec<String>,
        /// Workers with the same group share the partitions.
        group_id: String,
        /// What the messages are: `twitter_v1` (default: collectors' output), `x_v2`, `jetstream`.
        #[serde(default = "default_format")]
        format: crate::post::Format,
        /// Any librdkafka consumer property.
        #[serde(default)]
        properties: std::collections::BTreeMap<String, String>,
        /// Properties whose values are secrets.
        #[serde(default)]
        secret_properties: std::collections::BTreeMap<String, SecretRef>,
    },
    /// Bluesky Jetstream over WebSocket.
    Jetstream {
        /// Subscribe endpoint.
        #[serde(default = "default_jetstream_url")]
        url: String,
        /// Collections to receive (Jetstream filters server-side).
        #[serde(default = "default_collections")]
        wanted_collections: Vec<String>,
        /// Only these repositories (DIDs); empty for all.
        #[serde(default)]
        wanted_dids: Vec<String>,
        /// zstd-compressed frames (Jetstream's dictionary is built in).
        #[serde(default)]
        compress: bool,
        /// File holding the confirmed cursor (time_us), to resume after a restart.
        #[serde(default)]
        cursor_path: Option<PathBuf>,
        /// Or a Redis key for it (uses `[coordination]`'s server).
        #[serde(default)]
        cursor_redis_key: Option<String>,
        /// Resume this much before the saved cursor (no gap at the cost of a
        /// few repeats).
        #[serde(default = "default_rewind_secs")]
        cursor_rewind_secs: u64,
        /// No event for this long: reconnect.
        #[serde(default = "default_jetstream_stall_secs")]
        stall_timeout_secs: u64,
        /// Multiplies every reconnect wait (tests only; keep 1).
        #[serde(default = "default_scale")]
        backoff_scale: f64,
    },
    /// Generate realistic v1.1-shaped posts.
    Synthetic {
        /// How many posts; absent means without end.
        #[serde(default)]
        count: Option<u64>,
        /// Posts per second; 0 (the default) generates as fast as possible.
        #[serde(default)]
        rate: f64,
        /// Seed of the generator: the same seed gives the same posts.
        #[serde(default)]
        seed: u64,
    },
}

/// `[rules]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RulesConfig {
    /// JSON lines, one rule per line; reloaded when the file changes.
    File {
        /// The rules file.
        path: PathBuf,
        /// How often to look for changes.
        #[serde(default = "default_poll_ms")]
        poll_interval_ms: u64,
        /// How long the file must stay unchanged before it is reloaded.
        #[serde(default = "default_debounce_ms")]
        debounce_ms: u64,
    },
    /// One HASH per rule at `traptor-<type>:<id>:<n>`; reloaded on a
    /// `<type>:<id>` message on `channel` and every `rule_check_interval_secs`.
    Redis {
        /// Server URL (a password in it is never logged).
        #[serde(default = "default_redis_url")]
        url: String,
        /// Pub/sub channel of reload notices.
        #[serde(default = "default_channel")]
        channel: String,
        /// Safety-net reload period.
        #[serde(default = "default_rule_check_secs")]
        rule_check_interval_secs: u64,
    },
}

fn default_v1_base() -> String {
    "https://stream.twitter.com".into()
}
fn default_v1_stall_secs() -> u64 {
    90
}
fn default_min_rule_reconnect_secs() -> u64 {
    10
}
fn default_jetstream_url() -> String {
    "wss://jetstream2.us-east.bsky.network/subscribe".into()
}
fn default_collections() -> Vec<String> {
    vec!["app.bsky.feed.post".into()]
}
fn default_rewind_secs() -> u64 {
    5
}
fn default_jetstream_stall_secs() -> u64 {
    60
}

fn default_format() -> crate::post::Format {
    crate::post::Format::TwitterV1
}
fn default_x_base() -> String {
    "https://api.x.com".into()
}
fn default_stall_secs() -> u64 {
    20
}
fn default_x_max_rules() -> usize {
    1000
}
fn default_x_max_rule_length() -> usize {
    1024
}
fn default_dedup_window() -> usize {
    100_000
}
fn default_scale() -> f64 {
    1.0
}

fn default_poll_ms() -> u64 {
    1000
}
fn default_debounce_ms() -> u64 {
    250
}

/// `[sink]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkConfig {
    /// JSON lines on standard output.
    Stdout {},
    /// Kafka (librdkafka): lossless, with an on-disk spool.
    Kafka {
        /// `host:port,host:port`.
        brokers: String,
        #[serde(default = "default_topic")]
        topic: String,
        /// none, gzip, snappy, lz4 (default), zstd.
        #[serde(default = "default_compression")]
        compression: String,
        /// Bytes waiting for delivery reports before the sink stops taking input.
        #[serde(default = "default_inflight")]
        max_inflight_bytes: u64,
        /// librdkafka's retry window per record before it counts as failed.
        #[serde(default = "default_delivery_timeout_ms")]
        delivery_timeout_ms: u64,
        /// When the input ends with records still spooled (broker away), keep
        /// trying this long before leaving them for the next start.
        #[serde(default = "default_drain_secs")]
        drain_timeout_secs: u64,
        /// With a spool: when in-flight bytes are full and no delivery report
        /// has come for this long, the broker counts as stalled and input
        /// spills to disk; before that, input just waits (backpressure).
        #[serde(default = "default_spill_after_ms")]
        spill_after_ms: u64,
        /// Any librdkafka property, e.g. `"security.protocol" = "SASL_SSL"`.
        #[serde(default)]
        properties: std::collections::BTreeMap<String, String>,
        /// Properties whose values are secrets: `"sasl.password" = { env = "…" }`.
        #[serde(default)]
        secret_properties: std::collections::BTreeMap<String, SecretRef>,
        /// Where records wait when the broker is slow or down.
        #[serde(default)]
        spool: Option<SpoolConfig>,
    },
    /// JSON lines in a file.
    File {
        /// The file to append to.
        path: PathBuf,
        /// Rotate when the file would grow past this many bytes (absent: never).
        #[serde(default)]
        rotate_bytes: Option<u64>,
    },
}

/// `[sink.spool]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Directory of segment files.
    pub dir: PathBuf,
    /// Size cap of the whole spool.
    #[serde(default = "default_spool_max")]
    pub max_bytes: u64,
    #[serde(default = "default_segment")]
    pub segment_bytes: u64,
    /// `batch` (default), `always` or `never`.
    #[serde(default)]
    pub fsync: crate::sinks::spool::Fsync,
    /// What a full spool does: `drop_newest` (counted and logged) or `block`
    /// (pause the input; nothing lost).
    #[serde(default)]
    pub overflow: crate::sinks::spool::Overflow,
}

fn default_topic() -> String {
    "traptor".into()
}
fn default_compression() -> String {
    "lz4".into()
}
fn default_inflight() -> u64 {
    64 << 20
}
fn default_delivery_timeout_ms() -> u64 {
    // librdkafka keeps retrying (idempotently, no duplicates) this long;
    // meanwhile new records spill to the spool.
    300_000
}
fn default_spill_after_ms() -> u64 {
    2000
}
fn default_drain_secs() -> u64 {
    60
}
fn default_spool_max() -> u64 {
    10 << 30
}
fn default_segment() -> u64 {
    64 << 20
}

/// What happens to a post when its stage fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// The post continues without this stage's fields.
    #[default]
    Skip,
    /// The post is dropped (counted).
    Drop,
    /// The post goes to the dead-letter destination with the error attached.
    DeadLetter,
    /// The pipeline stops.
    Fail,
}

/// `[[stages]]`: one WebAssembly plugin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// Unique name; the plugin's fields land under `traptor.enrichments.<name>`.
    pub name: String,
    /// Path of the component (`.wasm`).
    pub plugin: PathBuf,
    /// What to do with a post whose stage fails.
    #[serde(default)]
    pub on_error: OnError,
    /// Handed to the plugin's initialiser as JSON.
    #[serde(default)]
    pub config: toml::Table,
    /// Memory limit of one instance.
    #[serde(default = "default_memory_mib")]
    pub memory_limit_mib: u64,
    /// Time limit of one batch call.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Time limit of starting an instance and running `init`.
    #[serde(default = "default_init_timeout_ms")]
    pub init_timeout_ms: u64,
    /// Consecutive failed batches after which the stage is bypassed for a
    /// cool-down (its posts follow `on_error`); 0 never opens the circuit.
    #[serde(default = "default_breaker_failures")]
    pub circuit_breaker_failures: u32,
    /// How long an open circuit bypasses the stage before it is tried again.
    #[serde(default = "default_breaker_cooldown_secs")]
    pub circuit_breaker_cooldown_secs: u64,
    /// What the plugin may use beyond the host's imports (nothing by default).
    #[serde(default)]
    pub grants: GrantsConfig,
}

/// `[stages.grants]`: capabilities a plugin gets only when listed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsConfig {
    /// Real wall and monotonic clocks (otherwise both read 0).
    #[serde(default)]
    pub clock: bool,
    /// Names of environment variables passed through with their host values.
    #[serde(default)]
    pub env: Vec<String>,
    /// Directories opened read-only, at the same path inside the plugin.
    #[serde(default)]
    pub dirs: Vec<PathBuf>,
}

fn default_init_timeout_ms() -> u64 {
    30_000
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_cooldown_secs() -> u64 {
    30
}

fn default_memory_mib() -> u64 {
    64
}
fn default_timeout_ms() -> u64 {
    50
}

/// `[pipeline]`: batching, parallelism and buffering.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineTuning {
    /// CPU workers (decode, match, stages, envelope); default: one per core.
    #[serde(default)]
    pub workers: Option<usize>,
    /// Records per batch.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// A partial batch is sent after this long (slow sources).
    #[serde(default = "default_batch_timeout_ms")]
    pub batch_timeout_ms: u64,
    /// Batches that may wait in each channel.
    #[serde(default = "default_channel_batches")]
    pub channel_batches: usize,
    /// Where compiled plugins are cached (default `~/.cache/traptor/wasm`,
    /// or `$TRAPTOR_CACHE_DIR/wasm`).
    #[serde(default)]
    pub plugin_cache_dir: Option<PathBuf>,
}

fn default_batch_size() -> usize {
    256
}
fn default_batch_timeout_ms() -> u64 {
    50
}
fn default_channel_batches() -> usize {
    8
}

impl Default for PipelineTuning {
    fn default() -> Self {
        PipelineTuning {
            workers: None,
            batch_size: default_batch_size(),
            batch_timeout_ms: default_batch_timeout_ms(),
            channel_batches: default_channel_batches(),
            plugin_cache_dir: None,
        }
    }
}

impl PipelineTuning {
    pub fn workers(&self) -> usize {
        self.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
    }
}

/// One thing wrong with a pipeline file, naming the key at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, e.g. `stages[1].name` or `rules.path`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why a pipeline file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read pipeline file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid pipeline file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid pipeline file {path}:\n{}", problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid { path: PathBuf, problems: Vec<Problem> },
}

/// A parsed pipeline file and where it lives.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub path: PathBuf,
    pub config: PipelineConfig,
}

impl LoadedConfig {
    /// Read, parse and check (pure checks only) a pipeline file.
    pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let config =
            PipelineConfig::parse(&text).map_err(|message| ConfigError::Parse { path: path.to_owned(), message })?;
        let problems = config.check();
        if !problems.is_empty() {
            return Err(ConfigError::Invalid { path: path.to_owned(), problems });
        }
        Ok(LoadedConfig { path: path.to_owned(), config }.resolved())
    }

    /// The directory relative paths are resolved against.
    pub fn base_dir(&self) -> PathBuf {
        self.path.parent().map(Path::to_path_buf).unwrap_or_default()
    }

    fn resolved(mut self) -> LoadedConfig {
        let base = self.base_dir();
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        match &mut self.config.source {
            SourceConfig::Replay { path, .. } => fix(path),
            SourceConfig::Synthetic { .. } => {}
            SourceConfig::XFilteredStream { bearer_token, .. } => {
                if let SecretRef::File { file } = bearer_token {
                    fix(file);
                }
            }
            SourceConfig::TwitterV1Filter {
                consumer_key, consumer_secret, access_token, access_token_secret, ..
            } => {
                for s in [consumer_key, consumer_secret, access_token, access_token_secret] {
                    if let SecretRef::File { file } = s {
                        fix(file);
                    }
                }
            }
            SourceConfig::Kafka { secret_properties, .. } => {
                for s in secret_properties.values_mut() {
                    if let SecretRef::File { file } = s {
                        fix(file);
                    }
                }
            }
            SourceConfig::Jetstream { cursor_path: Some(p), .. } => fix(p),
            SourceConfig::Jetstream { .. } => {}
        }
        match &mut self.config.rules {
            RulesConfig::File { path, .. } => fix(path),
            RulesConfig::Redis { .. } => {}
        }
        if let Some(ApiKeysConfig { file: Some(f), .. }) =
            self.config.coordination.as_mut().and_then(|c| c.api_keys.as_mut())
        {
            fix(f);
        }
        for sink in std::iter::once(&mut self.config.sink).chain(self.config.dead_letter.as_mut()) {
            match sink {
                SinkConfig::File { path, .. } => fix(path),
                SinkConfig::Stdout {} => {}
                SinkConfig::Kafka { spool, secret_properties, .. } => {
                    if let Some(s) = spool {
                        fix(&mut s.dir);
                    }
                    for s in secret_properties.values_mut() {
                        if let SecretRef::File { file } = s {
                            fix(file);
                        }
                    }
                }
            }
        }
        for s in &mut self.config.stages {
            fix(&mut s.plugin);
            for d in &mut s.grants.dirs {
                fix(d);
            }
        }
        if let Some(d) = &mut self.config.pipeline.plugin_cache_dir {
            fix(d);
        }
        self
    }
}

impl PipelineConfig {
    /// Parse TOML text. The message names the line, column and key at fault.
    pub fn parse(text: &str) -> Result<PipelineConfig, String> {
        toml::from_str(text).map_err(|e| render_toml_error(text, &e))
    }

    /// Pure checks of values that parse but make no sense.
    pub fn check(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut bad = |key: &str, message: String| out.push(Problem { key: key.to_owned(), message });
        match &self.source {
            SourceConfig::Replay { rate, path, .. } => {
                if !(rate.is_finite() && *rate >= 0.0) {
                    bad("source.rate", format!("must be a number ≥ 0, got {rate}"));
                }
                if path.as_os_str().is_empty() {
                    bad("source.path", "must not be empty".into());
                }
            }
            SourceConfig::XFilteredStream { stall_timeout_secs, base_url, backoff_scale, .. } => {
                if *stall_timeout_secs == 0 {
                    bad("source.stall_timeout_secs", "must be ≥ 1".into());
                }
                if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                    bad("source.base_url", format!("{base_url:?} must start with http:// or https://"));
                }
                if !(0.0..=1.0).contains(backoff_scale) {
                    bad("source.backoff_scale", "must be between 0 and 1".into());
                }
            }
            SourceConfig::Kafka { topics, group_id, brokers, .. } => {
                if topics.is_empty() {
                    bad("source.topics", "name at least one topic".into());
                }
                if group_id.is_empty() {
                    bad("source.group_id", "must not be empty".into());
                }
                if brokers.trim().is_empty() {
                    bad("source.brokers", "must name at least one broker".into());
                }
            }
            SourceConfig::TwitterV1Filter { base_url, stall_timeout_secs, .. } => {
                if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                    bad("source.base_url", format!("{base_url:?} must start with http:// or https://"));
                }
                if *stall_timeout_secs == 0 {
                    bad("source.stall_timeout_secs", "must be ≥ 1".into());
                }
            }
            SourceConfig::Jetstream { url, cursor_path, cursor_redis_key, stall_timeout_secs, .. } => {
                if !(url.starts_with("ws://") || url.starts_with("wss://")) {
                    bad("source.url", format!("{url:?} must start with ws:// or wss://"));
                }
                if cursor_path.is_some() && cursor_redis_key.is_some() {
                    bad("source.cursor_path", "give cursor_path or cursor_redis_key, not both".into());
                }
                if *stall_timeout_secs == 0 {
                    bad("source.stall_timeout_secs", "must be ≥ 1".into());
                }
            }
            SourceConfig::Synthetic { rate, count, .. } => {
                if !(rate.is_finite() && *rate >= 0.0) {
                    bad("source.rate", format!("must be a number ≥ 0, got {rate}"));
                }
                if *count == Some(0) {
                    bad("source.count", "must be ≥ 1 (leave it out for no end)".into());
                }
            }
        }
        match &self.rules {
            RulesConfig::File { poll_interval_ms, .. } => {
                if *poll_interval_ms == 0 {
                    bad("rules.poll_interval_ms", "must be ≥ 1".into());
                }
            }
            RulesConfig::Redis { rule_check_interval_secs, channel, .. } => {
                if *rule_check_interval_secs == 0 {
                    bad("rules.rule_check_interval_secs", "must be ≥ 1".into());
                }
                if channel.is_empty() {
                    bad("rules.channel", "must not be empty".into());
                }
            }
        }
        if let Some(c) = &self.coordination {
            if c.heartbeat_interval_secs < crate::coordination::heartbeat::MIN_INTERVAL_SECS {
                bad(
                    "coordination.heartbeat_interval_secs",
                    format!(
                        "must be ≥ {} (got {})",
                        crate::coordination::heartbeat::MIN_INTERVAL_SECS,
                        c.heartbeat_interval_secs
                    ),
                );
            }
            if c.stats_window_secs == 0 {
                bad("coordination.stats_window_secs", "must be ≥ 1".into());
            }
            if c.stats_flush_ms == 0 {
                bad("coordination.stats_flush_ms", "must be ≥ 1".into());
            }
            if let Some(k) = &c.api_keys {
                if k.hash.is_some() == k.file.is_some() {
                    bad("coordination.api_keys", "give exactly one of `hash` and `file`".into());
                }
                if k.lease_secs <= c.heartbeat_interval_secs {
                    bad(
                        "coordination.api_keys.lease_secs",
                        "must be longer than the heartbeat interval (the lease is renewed with each beat)".into(),
                    );
                }
            }
        }
        if let SinkConfig::File { rotate_bytes: Some(0), .. } = &self.sink {
            bad("sink.rotate_bytes", "must be ≥ 1 (leave it out for no rotation)".into());
        }
        if let SinkConfig::Kafka { compression, brokers, max_inflight_bytes, .. } = &self.sink {
            if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&compression.as_str()) {
                bad("sink.compression", format!("{compression:?}: expected none, gzip, snappy, lz4 or zstd"));
            }
            if brokers.trim().is_empty() {
                bad("sink.brokers", "must name at least one broker".into());
            }
            if *max_inflight_bytes == 0 {
                bad("sink.max_inflight_bytes", "must be ≥ 1".into());
            }
        }
        if let Some(SinkConfig::Kafka { .. } | SinkConfig::Stdout {}) = &self.dead_letter
            && matches!(self.sink, SinkConfig::Kafka { .. })
        {
            bad(
                "dead_letter.type",
                "with a kafka sink, dead letters go to a file ([dead_letter] type = \"file\")".into(),
            );
        }
        if let Some(SinkConfig::Kafka { .. }) = &self.dead_letter {
            bad("dead_letter.type", "a kafka dead-letter topic is not supported yet; use a file".into());
        }
        let mut names = std::collections::HashSet::new();
        for (i, s) in self.stages.iter().enumerate() {
            let valid = !s.name.is_empty() && s.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                bad(
                    &format!("stages[{i}].name"),
                    format!("{:?} must be non-empty ASCII letters, digits, '_' or '-'", s.name),
                );
            }
            if !names.insert(s.name.clone()) {
                bad(&format!("stages[{i}].name"), format!("{:?} is used by an earlier stage", s.name));
            }
            if s.memory_limit_mib == 0 {
                bad(&format!("stages[{i}].memory_limit_mib"), "must be ≥ 1".into());
            }
            if s.timeout_ms == 0 {
                bad(&format!("stages[{i}].timeout_ms"), "must be ≥ 1".into());
            }
            if s.init_timeout_ms == 0 {
                bad(&format!("stages[{i}].init_timeout_ms"), "must be ≥ 1".into());
            }
            if s.on_error == OnError::DeadLetter && self.dead_letter.is_none() {
                bad(
                    &format!("stages[{i}].on_error"),
                    format!("stage {:?} sends failures to dead letters, but there is no [dead_letter] section", s.name),
                );
            }
        }
        let p = &self.pipeline;
        if p.workers == Some(0) {
            bad("pipeline.workers", "must be ≥ 1".into());
        }
        if p.batch_size == 0 {
            bad("pipeline.batch_size", "must be ≥ 1".into());
        }
        if p.channel_batches == 0 {
            bad("pipeline.channel_batches", "must be ≥ 1".into());
        }
        out
    }
}

fn unknown_key_offset(text: &str, span: std::ops::Range<usize>, msg: &str) -> Option<usize> {
    let key = msg.strip_prefix("unknown field `")?.split('`').next()?;
    // The span may cover only the table's header: search to the next header.
    let region = text.get(span.start..)?;
    let mut offset = span.start;
    for (i, line) in region.split_inclusive('\n').enumerate() {
        if i > 0 && line.trim_start().starts_with('[') {
            break;
        }
        let t = line.trim_start();
        if t.strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('=')) {
            return Some(offset + (line.len() - t.len()));
        }
        offset += line.len();
    }
    None
}

/// `toml`'s message with the 1-based line and column of its span.
fn render_toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().to_owned();
    match e.span() {
        Some(span) => {
            // Tagged tables (`type = ...`) are buffered by serde, so toml's span
            // for an unknown key covers the whole table: find the key's own line.
            let start = unknown_key_offset(text, span.clone(), &msg).unwrap_or(span.start);
            let before = &text[..start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            let snippet = text.lines().nth(line - 1).unwrap_or("").trim();
            format!("line {line}, column {col}: {msg} (at `{snippet}`)")
        }
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[traptor]
type = "track"
id = 3

[source]
type = "replay"
path = "posts.jsonl"

[rules]
type = "file"
path = "rules.jsonl"

[[stages]]
name = "sentiment"
plugin = "sentiment.wasm"
on_error = "dead_letter"
config = { lexicon = "en" }

[sink]
type = "stdout"

[dead_letter]
type = "file"
path = "dead.jsonl"
"#;

    #[test]
    fn good_file_parses() {
        let c = PipelineConfig::parse(GOOD).expect("parses");
        assert_eq!(c.traptor.id, 3);
        assert_eq!(c.stages[0].on_error, OnError::DeadLetter);
        assert!(c.check().is_empty());
    }

    #[test]
    fn unknown_keys_are_errors_with_line() {
        let text = GOOD.replace("path = \"rules.jsonl\"", "pathh = \"rules.jsonl\"");
        let e = PipelineConfig::parse(&text).expect_err("unknown key");
        assert!(e.contains("pathh"), "{e}");
        assert!(e.contains("line "), "{e}");
        let text = GOOD.replace("id = 3", "id = 3\ncolour = \"red\"");
        let e = PipelineConfig::parse(&text).expect_err("unknown key");
        assert!(e.contains("colour") && e.contains("line 5"), "{e}");
    }

    #[test]
    fn unknown_types_are_errors() {
        let e =
            PipelineConfig::parse(&GOOD.replace("type = \"replay\"", "type = \"carrier_pigeon\"")).expect_err("bad");
        assert!(e.contains("carrier_pigeon"), "{e}");
        let e = PipelineConfig::parse(&GOOD.replace("type = \"track\"", "type = \"trak\"")).expect_err("bad");
        assert!(e.contains("trak") && e.contains("line 3"), "{e}");
    }

    #[test]
    fn checks_name_the_key() {
        let text = GOOD.replace("name = \"sentiment\"", "name = \"senti ment\"");
        let c = PipelineConfig::parse(&text).expect("parses");
        let p = c.check();
        assert_eq!(p[0].key, "stages[0].name");
    }
}
