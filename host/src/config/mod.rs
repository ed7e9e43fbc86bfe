//! The pipeline file (DESIGN §7): one TOML document naming a source, a rule
//! store, ordered stages and a sink.
//!
//! This module is the document's skeleton only: each section's keys, checks
//! and path resolution live with the component that uses them (sources,
//! sinks, rule stores, stages, coordination, pipeline tuning), and this file
//! places them — a component's problem `stall_timeout_secs` is reported as
//! `source.stall_timeout_secs`.
//!
//! Every table denies unknown keys, so a typo is an error that names the key and
//! its line, never a silently ignored setting. Checking happens in two phases
//! (as in Vector): [`PipelineConfig::check`] is pure and runs on every load;
//! `app::validate` adds what needs the environment (files, rules, plugins).
//!
//! Relative paths in the file are resolved against the file's own directory, so
//! a pipeline runs the same from any working directory.

use std::path::{Path, PathBuf};

use serde::Deserialize;

mod env;
mod locate;

pub use crate::component::Problem;
use crate::component::{BaseDir, Problems, yes};
use crate::coordination::CoordinationConfig;
use crate::pipeline::PipelineTuning;
use crate::plugins::StageConfig;
use crate::redis_conn::{DEFAULT_REDIS_URL, RedisAccess, RedisUrl};
use crate::rules::{RuleType, RulesConfig};
use crate::sinks::SinkConfig;
use crate::sources::SourceConfig;
pub use env::{EnvError, IdentityOverride};
use locate::render_toml_error;

/// A whole pipeline file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Who this collector is.
    pub traptor: TraptorConfig,
    /// Where posts come from: `[source]`, the one-source form. Moved into
    /// `sources` when the file is parsed.
    #[serde(default, rename = "source")]
    single_source: Option<SourceConfig>,
    /// Where posts come from: `[[sources]]`, several merged into one stream
    /// (each post's `traptor.source` names its source). After parsing, also
    /// holds the `[source]` of the one-source form (with no name).
    #[serde(default)]
    pub sources: Vec<NamedSource>,
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
    /// The admin listener: `/metrics`, `/health`, `/ready` (off unless set).
    #[serde(default)]
    pub admin: Option<crate::admin::AdminConfig>,
    /// The on-disk queue between the sources and the workers.
    #[serde(default)]
    pub buffer: Option<crate::pipeline::buffer::BufferConfig>,
    /// Drop posts seen before, across sources and restarts.
    #[serde(default)]
    pub dedup: Option<crate::pipeline::dedup::DedupConfig>,
    /// Per-tag rate limits and sampling of rules: `[limits.<tag>]`.
    #[serde(default)]
    pub limits: crate::pipeline::limits::LimitsConfig,
    /// Every stage's component must be signed by one of these keys (a
    /// stage's own `[stages.verify]` replaces it for that stage).
    #[serde(default)]
    pub verify: Option<crate::plugins::stages::VerifyConfig>,
}

/// One source of a pipeline.
#[derive(Debug, Clone, Deserialize)]
pub struct NamedSource {
    /// `[[sources]] name`: written to each post's `traptor.source` (default:
    /// the source's type). `None` for the one-source form `[source]`.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(flatten)]
    pub source: SourceConfig,
    /// Given as `[[sources]]` (else `[source]`).
    #[serde(skip)]
    pub listed: bool,
}

impl NamedSource {
    /// The name posts carry in `traptor.source`: the given one, else the type.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(self.source.type_name())
    }
}

/// `[traptor]`: the collector's identity, as the original's `TRAPTOR_TYPE`/`TRAPTOR_ID`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraptorConfig {
    /// `track`, `follow` or `locations`.
    #[serde(rename = "type")]
    pub traptor_type: RuleType,
    /// Collector number; with the type it names the Redis keys
    /// (`traptor-<type>:<id>`). `"auto"`: claim, by lease, the lowest id of
    /// the type with rules in Redis and no live collector (a standby until one
    /// is free).
    #[serde(default)]
    pub id: IdSetting,
    /// Forward non-post stream messages (limit, delete, …) to the sink unchanged.
    #[serde(default = "yes")]
    pub forward_control: bool,
    /// Period of the throughput line in the log; 0 turns it off.
    #[serde(default = "default_stats_secs")]
    pub stats_interval_secs: u64,
    /// Write `traptor.provenance` (collector, rule-set hash, stages with
    /// digests, source position, API key name) into every post.
    #[serde(default = "yes")]
    pub provenance: bool,
    /// The id was claimed by lease (`id = "auto"`): files the id owns (the
    /// buffer, the dedup snapshot) go under a per-id name even where the
    /// file names one place, since the next run may hold another id.
    #[serde(skip)]
    pub claimed: bool,
}

impl TraptorConfig {
    /// Who this collector is (id 0 while `id = "auto"` has not claimed one:
    /// the run replaces it by the id its lease holds).
    pub fn collector(&self) -> crate::rules::Collector {
        crate::rules::Collector::new(self.traptor_type, self.id.fixed().unwrap_or(0))
    }
}

/// `[traptor] id`: a number, or `"auto"` (claimed by lease at start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdSetting {
    Fixed(u32),
    Auto,
}

impl Default for IdSetting {
    fn default() -> Self {
        IdSetting::Fixed(0)
    }
}

impl IdSetting {
    pub fn fixed(self) -> Option<u32> {
        match self {
            IdSetting::Fixed(n) => Some(n),
            IdSetting::Auto => None,
        }
    }

    pub fn is_auto(self) -> bool {
        self == IdSetting::Auto
    }
}

impl std::fmt::Display for IdSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdSetting::Fixed(n) => write!(f, "{n}"),
            IdSetting::Auto => f.write_str("auto"),
        }
    }
}

impl std::str::FromStr for IdSetting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "auto" => Ok(IdSetting::Auto),
            n => n.parse().map(IdSetting::Fixed).map_err(|_| format!("{s:?}: expected a whole number or \"auto\"")),
        }
    }
}

impl<'de> Deserialize<'de> for IdSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u32),
            S(String),
        }
        match Raw::deserialize(d).map_err(|_| serde::de::Error::custom("expected a whole number or \"auto\""))? {
            Raw::N(n) => Ok(IdSetting::Fixed(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

fn default_stats_secs() -> u64 {
    10
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
    #[error("invalid pipeline file {path}: {source}")]
    Env {
        path: PathBuf,
        #[source]
        source: EnvError,
    },
    #[error("invalid pipeline file {path}:\n{}", problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid { path: PathBuf, problems: Vec<Problem> },
}

/// A parsed pipeline file and where it lives.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub path: PathBuf,
    pub config: PipelineConfig,
    /// The file's text with the environment's values in (`validate --print`).
    pub text: String,
    /// Coordination as it will run (`None`: off), derived once at load.
    pub coordination: Option<Coordination>,
}

/// Coordination as it runs: the Redis server and the `[coordination]` settings.
#[derive(Debug, Clone)]
pub struct Coordination {
    pub url: RedisUrl,
    pub settings: CoordinationConfig,
}

impl Coordination {
    /// The Redis server coordination talks to, if coordination is on: always
    /// when the rules are in Redis (their server, unless `[coordination] url`
    /// names another), else when `[coordination]` is present.
    fn derive(c: &PipelineConfig) -> Option<Coordination> {
        let rules_url = c.rules.component().redis_url();
        let own = |co: &CoordinationConfig, url: String| {
            RedisUrl::new(url).with_access(RedisAccess {
                tls_ca_file: co.tls_ca_file.clone(),
                tls_insecure: co.tls_insecure,
                password: co.password.clone(),
            })
        };
        let (url, settings) = match (&c.coordination, rules_url) {
            (Some(co), _) if co.url.is_some() => (own(co, co.url.clone().unwrap_or_default()), co.clone()),
            (Some(co), Some(r)) => (r, co.clone()),
            (Some(co), None) => (own(co, DEFAULT_REDIS_URL.to_owned()), co.clone()),
            (None, Some(r)) => (r, CoordinationConfig::default()),
            (None, None) => return None,
        };
        Some(Coordination { url, settings })
    }
}

impl LoadedConfig {
    /// Read, fill from the environment, parse and check (pure checks only)
    /// a pipeline file.
    pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
        LoadedConfig::load_with(path, IdentityOverride::default())
    }

    /// [`LoadedConfig::load`] with the identity given on the command line
    /// (it wins over `TRAPTOR_TYPE`/`TRAPTOR_ID`, which win over the file).
    pub fn load_with(path: &Path, cli: IdentityOverride) -> Result<LoadedConfig, ConfigError> {
        let env_err = |source| ConfigError::Env { path: path.to_owned(), source };
        let raw =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let get = |name: &str| std::env::var(name).ok();
        let text = env::substitute(&raw, get).map_err(env_err)?;
        let mut config =
            PipelineConfig::parse(&text).map_err(|message| ConfigError::Parse { path: path.to_owned(), message })?;
        let identity = cli.or_from_env(get).map_err(env_err)?;
        if let Some(t) = identity.traptor_type {
            config.traptor.traptor_type = t;
        }
        if let Some(id) = identity.id {
            config.traptor.id = id;
        }
        let problems = config.check();
        if !problems.is_empty() {
            return Err(ConfigError::Invalid { path: path.to_owned(), problems });
        }
        let loaded = LoadedConfig { path: path.to_owned(), config, text, coordination: None }.resolved();
        let problems = loaded.check_files();
        if !problems.is_empty() {
            return Err(ConfigError::Invalid { path: path.to_owned(), problems });
        }
        Ok(loaded)
    }

    /// No two components name the same file (a sink writing the file its
    /// source replays would feed itself until the disk is full). Paths are
    /// compared resolved, through symbolic links where they exist.
    fn check_files(&self) -> Vec<Problem> {
        let c = &self.config;
        let mut files: Vec<(String, PathBuf)> = Vec::new();
        let mut add = |section: &str, list: Vec<(&'static str, &Path)>| {
            files.extend(list.into_iter().map(|(k, p)| (format!("{section}.{k}"), same_file_key(p))));
        };
        for (section, s) in c.source_sections() {
            add(&section, s.source.component().files());
        }
        add("rules", c.rules.component().files());
        add("sink", c.sink.component().files());
        if let Some(d) = &c.dead_letter {
            add("dead_letter", d.component().files());
        }
        let mut out = Vec::new();
        for (i, (key, path)) in files.iter().enumerate() {
            if let Some((first, _)) = files[..i].iter().find(|(_, p)| p == path) {
                out.push(Problem {
                    key: key.clone(),
                    message: format!("{} is also {first}; each file may serve one purpose", path.display()),
                });
            }
        }
        out
    }

    /// The directory relative paths are resolved against.
    pub fn base_dir(&self) -> PathBuf {
        self.path.parent().map(Path::to_path_buf).unwrap_or_default()
    }

    fn resolved(mut self) -> LoadedConfig {
        let base = BaseDir::new(self.base_dir());
        let c = &mut self.config;
        for s in &mut c.sources {
            s.source.component_mut().resolve_paths(&base);
        }
        c.rules.component_mut().resolve_paths(&base);
        for sink in std::iter::once(&mut c.sink).chain(c.dead_letter.as_mut()) {
            sink.component_mut().resolve_paths(&base);
        }
        for s in &mut c.stages {
            if s.verify.is_none() {
                s.verify.clone_from(&c.verify);
            }
            s.resolve_paths(&base);
        }
        if let Some(co) = &mut c.coordination {
            co.resolve_paths(&base);
        }
        c.pipeline.resolve_paths(&base);
        if let Some(d) = &mut c.dedup {
            d.resolve_paths(&base);
        }
        if let Some(b) = &mut c.buffer {
            b.resolve_paths(&base);
        }
        if let Some(a) = &mut c.admin {
            a.resolve_paths(&base);
        }
        self.coordination = Coordination::derive(&self.config);
        self
    }
}

/// A path as it names a file: through symbolic links when it exists, else
/// with `.` and `..` taken out.
fn same_file_key(p: &Path) -> PathBuf {
    if let Ok(c) = p.canonicalize() {
        return c;
    }
    let absolute;
    let p = if p.is_relative() {
        absolute = std::env::current_dir().unwrap_or_default().join(p);
        &absolute
    } else {
        p
    };
    let mut out = PathBuf::new();
    for part in p.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

impl PipelineConfig {
    /// Parse TOML text. The message names the line, column and key at fault.
    pub fn parse(text: &str) -> Result<PipelineConfig, String> {
        let mut c: PipelineConfig = toml::from_str(text).map_err(|e| render_toml_error(text, &e))?;
        for s in &mut c.sources {
            s.listed = true;
        }
        match (c.single_source.take(), c.sources.is_empty()) {
            (Some(_), false) => {
                return Err("give either [source] (one source) or [[sources]] (several), not both".into());
            }
            (None, true) => return Err("missing [source] (or [[sources]]): where posts come from".into()),
            (Some(source), true) => c.sources.push(NamedSource { name: None, source, listed: false }),
            (None, false) => {}
        }
        Ok(c)
    }

    /// Each source with the section its keys are reported under
    /// (`source`, or `sources[i]`).
    pub fn source_sections(&self) -> impl Iterator<Item = (String, &NamedSource)> {
        self.sources
            .iter()
            .enumerate()
            .map(|(i, s)| (if s.listed { format!("sources[{i}]") } else { "source".into() }, s))
    }

    /// A source holds a live connection (the buffer is on by default).
    pub fn any_live_source(&self) -> bool {
        self.sources.iter().any(|s| s.source.component().live())
    }

    /// The buffer settings in effect (`[buffer]`, or the defaults), if it is on.
    pub fn buffer(&self) -> Option<crate::pipeline::buffer::BufferConfig> {
        let b = self.buffer.clone().unwrap_or_default();
        b.is_on(self.any_live_source()).then_some(b)
    }

    /// Pure checks of values that parse but make no sense, each component
    /// under its section's name.
    pub fn check(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        Problems::new("traptor", &mut out).range("stats_interval_secs", self.traptor.stats_interval_secs, 0, 86_400);
        let mut names: Vec<(&str, String)> = Vec::new();
        for (section, s) in self.source_sections() {
            let mut p = Problems::new(&section, &mut out);
            s.source.component().check(&mut p);
            if let Some(n) = &s.name
                && (n.is_empty() || n.len() > 64 || !n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
            {
                p.add("name", "a source name is 1 to 64 letters, digits, `-`, `_` or `.`");
            }
            if let Some((_, first)) = names.iter().find(|(n, _)| *n == s.label()) {
                p.add("name", format!("{:?} also names {first}; give each source its own name", s.label()));
            }
            names.push((s.label(), section.clone()));
        }
        if self.traptor.id.is_auto() && !matches!(self.rules, crate::rules::RulesConfig::Redis(_)) {
            Problems::new("traptor", &mut out).add(
                "id",
                "\"auto\" claims an id that has rules in Redis; it needs [rules] type = \"redis\" (or give a number)",
            );
        }
        if let (true, Some(d)) = (self.traptor.id.is_auto(), &self.dedup)
            && d.redis.is_some()
        {
            let lease = self.coordination.as_ref().map_or(CoordinationConfig::default().lease_secs, |c| c.lease_secs);
            if d.claim_secs * 3 > lease * 2 {
                Problems::new("dedup", &mut out).add(
                    "claim_secs",
                    format!(
                        "must be at most two thirds of [coordination] lease_secs ({lease}): a dead collector's \
                         claims must expire before a standby takes its id, or the standby drops the posts it never wrote"
                    ),
                );
            }
        }
        if self.sources.len() > usize::from(u16::MAX) {
            Problems::new("sources", &mut out).add("", "at most 65535 sources");
        }
        if let Some(b) = &self.buffer {
            b.check(&mut Problems::new("buffer", &mut out));
        }
        self.rules.component().check(&mut Problems::new("rules", &mut out));
        self.sink.component().check(&mut Problems::new("sink", &mut out));
        if let Some(d) = &self.dead_letter {
            let mut p = Problems::new("dead_letter", &mut out);
            d.component().check(&mut p);
            match d {
                SinkConfig::Kafka(_) => {
                    p.add("type", "a kafka dead-letter topic is not supported yet; use a file");
                }
                SinkConfig::Stdout(_) if matches!(self.sink, SinkConfig::Kafka(_)) => {
                    p.add("type", "with a kafka sink, dead letters go to a file ([dead_letter] type = \"file\")")
                }
                SinkConfig::Stdout(_) | SinkConfig::File(_) => {}
            }
        }
        crate::plugins::stages::check_all(&self.stages, self.dead_letter.is_some(), &mut out);
        self.pipeline.check(&mut Problems::new("pipeline", &mut out));
        self.limits.check(&mut Problems::new("limits", &mut out));
        if let Some(d) = &self.dedup {
            d.check(&mut Problems::new("dedup", &mut out));
        }
        if let Some(c) = &self.coordination {
            c.check(&mut Problems::new("coordination", &mut out));
        }
        if let Some(a) = &self.admin {
            a.check(&mut Problems::new("admin", &mut out));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::OnError;

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
        assert_eq!(c.traptor.id, IdSetting::Fixed(3));
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

    /// `[[sources]]`: several named sources; `[source]` or them, not both;
    /// names unique and plain; each source's keys checked under its index.
    #[test]
    fn several_sources_are_named_and_checked_each() {
        let two = GOOD.replace(
            "[source]\ntype = \"replay\"\npath = \"posts.jsonl\"",
            "[[sources]]\nname = \"a\"\ntype = \"replay\"\npath = \"a.jsonl\"\n\n[[sources]]\ntype = \"synthetic\"\nrate = -1",
        );
        let c = PipelineConfig::parse(&two).expect("parses");
        assert_eq!(c.sources.iter().map(NamedSource::label).collect::<Vec<_>>(), ["a", "synthetic"]);
        assert!(c.sources.iter().all(|s| s.listed));
        let keys: Vec<String> = c.check().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["sources[1].rate"], "each source under its own index");
        assert!(c.buffer().is_none(), "no live source: no buffer by default");

        let one = PipelineConfig::parse(GOOD).expect("parses");
        assert_eq!((one.sources.len(), one.sources[0].listed, one.sources[0].label()), (1, false, "replay"));

        let both = GOOD.replace("[rules]", "[[sources]]\ntype = \"synthetic\"\n\n[rules]");
        let e = PipelineConfig::parse(&both).expect_err("both forms");
        assert!(e.contains("either [source]") && e.contains("not both"), "{e}");
        let neither = GOOD.replace("[source]\ntype = \"replay\"\npath = \"posts.jsonl\"", "");
        assert!(PipelineConfig::parse(&neither).expect_err("none").contains("missing [source]"));

        let same = two.replace("type = \"synthetic\"\nrate = -1", "name = \"a\"\ntype = \"synthetic\"");
        let p = PipelineConfig::parse(&same).expect("parses").check();
        assert!(p.iter().any(|p| p.key == "sources[1].name" && p.message.contains("also names sources[0]")), "{p:?}");
        let bad = two.replace("name = \"a\"", "name = \"a b\"");
        let p = PipelineConfig::parse(&bad).expect("parses").check();
        assert!(p.iter().any(|p| p.key == "sources[0].name"), "{p:?}");
        let typo = two.replace("path = \"a.jsonl\"", "pth = \"a.jsonl\"");
        let e = PipelineConfig::parse(&typo).expect_err("unknown key");
        assert!(e.contains("pth"), "{e}");
    }

    /// Issue 16, defect 8: a value of the wrong type in a tagged table was
    /// located at the table's header, not at its key.
    #[test]
    fn values_of_the_wrong_type_are_located_at_their_key() {
        let text = GOOD.replace("path = \"posts.jsonl\"", "path = \"posts.jsonl\"\nrate = \"fast\"");
        let e = PipelineConfig::parse(&text).expect_err("a string rate");
        assert!(e.contains("line 9") && e.contains("rate = \"fast\""), "{e}");
        let text = GOOD.replace("path = \"dead.jsonl\"", "path = \"dead.jsonl\"\nrotate_bytes = -1");
        let e = PipelineConfig::parse(&text).expect_err("a negative size");
        assert!(e.contains("rotate_bytes = -1"), "{e}");
    }
}
