//! The `[[stages]]` section: each stage's keys and checks, and loading every
//! stage of a pipeline (compile or take from the cache, describe, `init`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::oci::{self, Lock, OciCache, PluginSource, RegistryConfig};
use super::signing;
use super::{PluginError, Runtime, Stage, StageSpec};
use crate::component::{BaseDir, Problems};

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
    /// The component: a path (`.wasm`), or `oci://REGISTRY/REPOSITORY:TAG`,
    /// `…@sha256:DIGEST`, or both.
    pub plugin: PluginSource,
    /// How to reach the plugin's registry (credentials, plain HTTP).
    #[serde(default)]
    pub registry: RegistryConfig,
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
    /// `[stages.verify]`: the component must be signed by one of these keys
    /// (default: the pipeline's top-level `[verify]`).
    #[serde(default)]
    pub verify: Option<VerifyConfig>,
    /// A candidate version run on a sample of the posts, compared, never
    /// written (`shadow = { plugin = "…", config = {…}, sample = 0.1 }`).
    #[serde(default)]
    pub shadow: Option<super::shadow::ShadowConfig>,
}

/// `[verify]` (every stage) or `[stages.verify]` (one stage): public keys
/// (`plugin keygen`'s `NAME.pub`), one of which must have signed the
/// component (`plugin sign`). Checked at `validate`, at start and on SIGHUP.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    pub keys: Vec<PathBuf>,
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

impl StageConfig {
    /// Pure checks of one stage; `dead_letters` says whether the pipeline has
    /// a `[dead_letter]` destination.
    pub fn check(&self, dead_letters: bool, p: &mut Problems<'_>) {
        let valid =
            !self.name.is_empty() && self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            p.add("name", format!("{:?} must be non-empty ASCII letters, digits, '_' or '-'", self.name));
        }
        p.range("memory_limit_mib", self.memory_limit_mib, 1, 16_384);
        p.range("timeout_ms", self.timeout_ms, 1, 600_000);
        p.range("init_timeout_ms", self.init_timeout_ms, 1, 600_000);
        p.range("circuit_breaker_failures", u64::from(self.circuit_breaker_failures), 0, 1_000_000);
        p.range("circuit_breaker_cooldown_secs", self.circuit_breaker_cooldown_secs, 0, 86_400);
        if let Some(sh) = &self.shadow {
            if !(sh.sample > 0.0 && sh.sample <= 1.0) {
                p.add("shadow.sample", format!("{} must be above 0 and at most 1", sh.sample));
            }
            if let Some(t) = sh.timeout_ms {
                p.range("shadow.timeout_ms", t, 1, 600_000);
            }
            if let Some(m) = sh.memory_limit_mib {
                p.range("shadow.memory_limit_mib", m, 1, 16_384);
            }
        }
        if self.verify.as_ref().is_some_and(|v| v.keys.is_empty()) {
            p.add("verify.keys", "list at least one public key (a [verify] section with no keys checks nothing)");
        }
        if self.on_error == OnError::DeadLetter && !dead_letters {
            p.add(
                "on_error",
                format!("stage {:?} sends failures to dead letters, but there is no [dead_letter] section", self.name),
            );
        }
    }

    pub fn resolve_paths(&mut self, base: &BaseDir) {
        if let PluginSource::Path(p) = &mut self.plugin {
            base.fix(p);
        }
        for d in &mut self.grants.dirs {
            base.fix(d);
        }
        for k in self.verify.iter_mut().flat_map(|v| v.keys.iter_mut()) {
            base.fix(k);
        }
        if let Some(PluginSource::Path(p)) = self.shadow.as_mut().map(|s| &mut s.plugin) {
            base.fix(p);
        }
    }

    /// The spec the runtime loads, with the component at `plugin` (a path
    /// already resolved, or the cached file of a registry component).
    pub fn spec(&self, plugin: PathBuf) -> StageSpec {
        StageSpec {
            name: self.name.clone(),
            plugin,
            config_json: super::config_json(&self.config),
            on_error: self.on_error,
            memory_limit_bytes: usize::try_from(self.memory_limit_mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX),
            timeout: Duration::from_millis(self.timeout_ms),
            init_timeout: Duration::from_millis(self.init_timeout_ms),
            grant_clock: self.grants.clock,
            grant_env: self.grants.env.clone(),
            grant_dirs: self.grants.dirs.clone(),
            breaker_failures: self.circuit_breaker_failures,
            breaker_cooldown: Duration::from_secs(self.circuit_breaker_cooldown_secs),
        }
    }
}

/// The most stages a pipeline may have (each costs an instance per worker).
pub const MAX_STAGES: usize = 64;

/// Checks across the list: names are unique, not too many stages.
pub fn check_all(stages: &[StageConfig], dead_letters: bool, out: &mut Vec<crate::component::Problem>) {
    if stages.len() > MAX_STAGES {
        Problems::new("", out).add("stages", format!("at most {MAX_STAGES} stages (got {})", stages.len()));
        return;
    }
    let mut names = HashSet::new();
    for (i, s) in stages.iter().enumerate() {
        let mut p = Problems::new(format!("stages[{i}]"), out);
        s.check(dead_letters, &mut p);
        if !names.insert(s.name.as_str()) {
            p.add("name", format!("{:?} is used by an earlier stage", s.name));
        }
    }
}

/// Why a stage could not be loaded, naming it.
#[derive(Debug, thiserror::Error)]
#[error("stages[{index}] ({name:?}): {source}")]
pub struct StageLoadError {
    pub index: usize,
    pub name: String,
    #[source]
    pub source: PluginError,
}

/// Load, describe and initialise every stage (compiling or using the cache
/// in `cache_dir`, default [`Runtime::default_cache_dir`]). A registry
/// component is fetched into the cache first. When the pipeline file
/// (`pipeline`) has a lock file, every stage must be in it and resolve to
/// the digest it pins. Every stage is tried, so all that fail are reported
/// at once.
pub fn load_all(
    stages: &[StageConfig],
    cache_dir: Option<PathBuf>,
    pipeline: &Path,
) -> Result<Vec<Arc<Stage>>, Vec<StageLoadError>> {
    if stages.is_empty() {
        return Ok(Vec::new());
    }
    let first = |source| vec![StageLoadError { index: 0, name: stages[0].name.clone(), source }];
    let cache_dir = cache_dir.or_else(Runtime::default_cache_dir);
    let lock = Lock::read_for(pipeline).map_err(|e| first(e.into()))?;
    let runtime = Runtime::new(cache_dir.clone()).map_err(first)?;
    let mut loaded = Vec::with_capacity(stages.len());
    let mut failed = Vec::new();
    for (index, s) in stages.iter().enumerate() {
        let started = Instant::now();
        let stage = locate(s, cache_dir.as_deref(), lock.as_ref()).and_then(|at| {
            let mut stage = load_located(&runtime, s, at)?;
            if let Some(sh) = &s.shadow {
                stage.shadow = Some(Box::new(load_shadow(s, sh, &runtime, cache_dir.as_deref())?));
            }
            Ok(stage)
        });
        match stage {
            Ok(stage) => {
                tracing::info!(
                    stage = %s.name,
                    plugin = %stage.description.name,
                    version = %stage.description.version,
                    from = %s.plugin,
                    cached = stage.component().from_cache,
                    ms = started.elapsed().as_millis() as u64,
                    "stage loaded"
                );
                loaded.push(Arc::new(stage));
            }
            Err(source) => failed.push(StageLoadError { index, name: s.name.clone(), source }),
        }
    }
    if failed.is_empty() { Ok(loaded) } else { Err(failed) }
}

/// A stage's candidate: the live stage's settings with the candidate's
/// component, configuration and limits, named `<stage>.shadow` in logs.
fn load_shadow(
    s: &StageConfig,
    sh: &super::shadow::ShadowConfig,
    runtime: &Arc<Runtime>,
    cache_dir: Option<&Path>,
) -> Result<super::Shadow, PluginError> {
    let mut c = s.clone();
    c.name = format!("{}.shadow", s.name);
    c.plugin = sh.plugin.clone();
    c.config = sh.config.clone();
    c.timeout_ms = sh.timeout_ms.unwrap_or(s.timeout_ms);
    c.memory_limit_mib = sh.memory_limit_mib.unwrap_or(s.memory_limit_mib);
    c.shadow = None;
    // A candidate is not in the lock (it is what may replace the locked one).
    let stage = load_located(runtime, &c, locate(&c, cache_dir, None)?)?;
    tracing::info!(stage = %s.name, candidate = %c.plugin, version = %stage.description.version, sample = sh.sample, "shadow candidate loaded");
    Ok(super::Shadow { stage, sample: sh.sample, stats: Arc::default() })
}

/// The file of a stage's component, checked against the lock if there is
/// one: a path as it is, a registry reference fetched into the cache (with
/// its manifest digest).
fn locate(s: &StageConfig, cache_dir: Option<&Path>, lock: Option<&(Lock, PathBuf)>) -> Result<Located, PluginError> {
    let written = s.plugin.to_string();
    let pinned = match lock {
        None => None,
        Some((lock, path)) => match lock.stage(&s.name) {
            None => {
                return Err(oci::OciError::LockStale {
                    lock: path.clone(),
                    reason: format!("has no stage {:?}", s.name),
                }
                .into());
            }
            Some(l) if l.plugin != written => {
                return Err(oci::OciError::LockStale {
                    lock: path.clone(),
                    reason: format!("pins {:?} for stage {:?}, but the pipeline names {written:?}", l.plugin, s.name),
                }
                .into());
            }
            Some(l) => Some((l.digest.as_str(), path.as_path())),
        },
    };
    match &s.plugin {
        PluginSource::Path(p) => {
            if let Some((expected, lock)) = pinned {
                let bytes = std::fs::read(p).map_err(|source| PluginError::Read { path: p.clone(), source })?;
                let found = oci::digest_of(&bytes);
                if found != expected {
                    return Err(oci::OciError::LockMismatch {
                        plugin: written,
                        lock: lock.to_owned(),
                        expected: expected.to_owned(),
                        found,
                    }
                    .into());
                }
            }
            let verified = match &s.verify {
                Some(v) => Some(verify_component(p, &signing::sig_path(p), v, None)?),
                None => None,
            };
            Ok(Located { path: p.clone(), manifest: None, verified })
        }
        PluginSource::Oci(r) => {
            let dir = cache_dir.ok_or_else(|| {
                oci::OciError::Runtime(
                    "a registry plugin needs a cache directory (set [pipeline] plugin_cache_dir or HOME)".into(),
                )
            })?;
            let cache = OciCache::new(dir);
            let pulled = oci::block_on(oci::fetch(r, &s.registry, &cache, pinned))?;
            let verified = match &s.verify {
                Some(v) => {
                    let sigs = signing::sig_path(&pulled.path);
                    Some(verify_component(&pulled.path, &sigs, v, Some((r, &s.registry, pulled.digest.as_str())))?)
                }
                None => None,
            };
            Ok(Located { path: pulled.path, manifest: Some(pulled.digest), verified })
        }
    }
}

/// Refuse a component that no key of `v` signed. Its signatures are in
/// `sigs`; for a registry component they are first fetched from the
/// registry (the referrers of its manifest) into `sigs` beside the cached
/// file, so a run without the registry checks the ones seen before.
fn verify_component(
    component: &Path,
    sigs: &Path,
    v: &VerifyConfig,
    registry: Option<(&oci::OciRef, &RegistryConfig, &str)>,
) -> Result<String, PluginError> {
    let keys = v.keys.iter().map(|k| signing::read_public(k)).collect::<Result<Vec<_>, _>>()?;
    let bytes = std::fs::read(component).map_err(|source| PluginError::Read { path: component.to_owned(), source })?;
    let digest = oci::digest_of(&bytes);
    if let Some((r, cfg, manifest)) = registry {
        let fetched = oci::Registry::new(r, cfg).and_then(|reg| oci::block_on(reg.signatures(r, manifest)));
        match fetched {
            // Only records that hold for these keys are kept: a registry
            // cannot replace a good cached record with a bad one.
            Ok(records) => {
                let good: Vec<_> =
                    records.into_iter().filter(|rec| keys.iter().any(|k| signing::holds(rec, &digest, k))).collect();
                signing::add_to_sig_file(sigs, &good)?;
            }
            Err(e) => {
                tracing::warn!(reference = %r, error = %e, "cannot fetch the plugin's signatures; checking those seen before")
            }
        }
    }
    let records = signing::read_sig_file(sigs)?;
    let key = signing::verify(&records, &digest, &keys)?;
    tracing::info!(component = %component.display(), %digest, key = %key.path.display(), key_id = %key.id, "signature verified");
    Ok(digest)
}

/// A component file, where it came from, and the digest its signature was
/// checked for.
struct Located {
    path: PathBuf,
    /// The manifest digest of a registry component.
    manifest: Option<String>,
    /// With `verify`: the digest that was verified (the loaded bytes must have it).
    verified: Option<String>,
}

/// Load the stage at `at` and check that the bytes loaded are the bytes verified
/// (the file could change between the two reads).
fn load_located(runtime: &Arc<Runtime>, c: &StageConfig, at: Located) -> Result<Stage, PluginError> {
    let mut stage = Stage::load(runtime, c.spec(at.path.clone()))?;
    let loaded = format!("sha256:{}", stage.component().sha256);
    if let Some(verified) = at.verified
        && verified != loaded
    {
        return Err(signing::SigningError::ChangedWhileLoading { path: at.path, verified, loaded }.into());
    }
    stage.origin.plugin = c.plugin.to_string();
    if let Some(digest) = at.manifest {
        stage.origin.digest = digest;
    }
    Ok(stage)
}

/// What `plugin lock` writes: each stage's reference and the digest it
/// resolves to now (registry components are fetched into the cache on the
/// way, so a locked pipeline starts without the registry).
pub fn lock_stages(stages: &[StageConfig], cache_dir: Option<PathBuf>) -> Result<Lock, Vec<StageLoadError>> {
    let cache_dir = cache_dir.or_else(Runtime::default_cache_dir);
    let mut lock = Lock::default();
    let mut failed = Vec::new();
    for (index, s) in stages.iter().enumerate() {
        let digest = match &s.plugin {
            PluginSource::Path(p) => std::fs::read(p)
                .map(|b| oci::digest_of(&b))
                .map_err(|source| PluginError::Read { path: p.clone(), source }),
            PluginSource::Oci(r) => match cache_dir.as_deref() {
                Some(dir) => oci::block_on(oci::fetch(r, &s.registry, &OciCache::new(dir), None))
                    .map(|p| p.digest)
                    .map_err(PluginError::from),
                None => Err(oci::OciError::Runtime("no cache directory (set HOME or TRAPTOR_CACHE_DIR)".into()).into()),
            },
        };
        match digest {
            Ok(digest) => {
                lock.stages.push(oci::LockedStage { name: s.name.clone(), plugin: s.plugin.to_string(), digest })
            }
            Err(source) => failed.push(StageLoadError { index, name: s.name.clone(), source }),
        }
    }
    if failed.is_empty() { Ok(lock) } else { Err(failed) }
}
