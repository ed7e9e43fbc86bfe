//! The WebAssembly plugin runtime (DESIGN §6, STYLE 9).
//!
//! * One [`Runtime`]: one wasmtime `Engine` (component model, epoch
//!   interruption), one `Linker` with the host imports and a WASI that grants
//!   nothing by default, and a thread that advances the epoch every millisecond.
//! * A component is compiled once; the compiled artefact is cached on disk
//!   keyed by the component's SHA-256 and the engine's compatibility hash
//!   ([`cache`]), so a 20 MB Python or JS component starts in milliseconds the
//!   second time.
//! * One [`Stage`] per `[[stages]]` entry: the `InstancePre`, the description,
//!   the validated configuration, counters and a circuit breaker shared by all
//!   workers.
//! * One [`StageInstance`] (store + instance) per worker and stage, kept warm.
//!   Each call gets a deadline (epoch ticks) and the store a memory limit. A
//!   trap, a timeout or an out-of-memory drops the instance; the next batch
//!   builds a fresh one from the `InstancePre` (an instance that trapped is
//!   never entered again: wasmtime refuses, and its state is suspect anyway).
//! * What the guest writes to stdout/stderr is kept in a small buffer and
//!   logged when the instance traps (a Rust panic message, a Python traceback).

mod answers;
pub mod build;
pub mod cache;
mod convert;
mod lower;
mod metrics;
pub mod oci;
pub mod scaffold;
pub mod shadow;
pub mod signing;
mod stage;
pub mod stages;
pub mod tool;
pub mod toolchain;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub use answers::{Action, Answer, Answers, Description, StageKind, StagePost, field_names};
pub use metrics::{StageMetrics, StageSnapshot};
pub use stage::{CallFailure, Shadow, Stage, StageInstance, StageOrigin, StageSpec};
pub use stages::{OnError, StageConfig, StageLoadError};

/// Generated from `wit/plugin.wit`: the current ABI.
#[allow(missing_debug_implementations, clippy::all)]
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin",
    });
}

/// Generated from `wit/v0.1/plugin.wit`: ABI 0.1, frozen. Components built
/// for it keep running (each post's strings lowered one by one, every
/// outcome returned).
#[allow(missing_debug_implementations, clippy::all)]
pub mod bindings_v01 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1",
        world: "plugin",
    });
}

pub use bindings::traptor::plugin::types as wit;
pub use bindings_v01::traptor::plugin::types as wit_v01;

/// The ABI (WIT package) version, as written in `wit/plugin.wit` (read by
/// the SDK at build time: the one place it is written).
pub const ABI_VERSION: &str = traptor_sdk::ABI_VERSION;
/// The export a component must have, without its version: the stage
/// interface, at any version compatible with [`ABI_VERSION`].
pub const STAGE_INTERFACE: &str = "traptor:plugin/stage";

/// The ABI versions this host runs, newest first: the current one and the
/// earlier one it still supports (frozen in `wit/v0.1/`).
pub const SUPPORTED_ABIS: [&str; 2] = [ABI_VERSION, "0.1.0"];

/// An ABI a component was built for, among those this host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abi {
    /// `traptor:plugin@0.1.x`: every string of every post lowered on its own,
    /// one outcome per post returned.
    V0_1,
    /// `traptor:plugin@0.2.x`: one buffer per batch, only the fields the stage
    /// reads, kept posts not returned.
    V0_2,
}

/// Which supported ABI a component built for `found` runs on, if any: the
/// component model's semver rule for WIT packages, which wasmtime applies
/// when it looks the exports up — the same major version, and below 1.0 the
/// same minor (below 0.1 the same patch). A pre-release or build suffix
/// matches only itself.
pub fn abi_of(found: &str) -> Option<Abi> {
    fn parts(v: &str) -> Option<[u64; 3]> {
        let mut it = v.split('.').map(|p| p.parse::<u64>().ok());
        let r = [it.next()??, it.next()??, it.next()??];
        it.next().is_none().then_some(r)
    }
    let compatible = |with: &str| match (parts(found), parts(with)) {
        (Some([a, b, c]), Some([x, y, z])) => a == x && (a > 0 || (b == y && (b > 0 || c == z))),
        _ => found == with,
    };
    if compatible(ABI_VERSION) {
        Some(Abi::V0_2)
    } else if compatible(SUPPORTED_ABIS[1]) {
        Some(Abi::V0_1)
    } else {
        None
    }
}

/// Whether a component built for ABI `found` runs on this host.
pub fn abi_compatible(found: &str) -> bool {
    abi_of(found).is_some()
}

/// The versions this host accepts, for messages: `0.2.x or 0.1.x`.
pub fn abi_range() -> String {
    let range = |v: &str| match v.split('.').collect::<Vec<_>>()[..] {
        ["0", "0", _] => v.to_owned(),
        ["0", minor, _] => format!("0.{minor}.x"),
        [major, _, _] => format!("{major}.x"),
        _ => v.to_owned(),
    };
    SUPPORTED_ABIS.iter().map(|v| range(v)).collect::<Vec<_>>().join(" or ")
}

/// How often the epoch advances; deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Why a plugin could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot read plugin {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid WebAssembly component: {message}")]
    Compile { path: PathBuf, message: String },
    #[error("{path} is not a traptor plugin: it does not export `{STAGE_INTERFACE}@{ABI_VERSION}`; it exports {found}")]
    NotAPlugin { path: PathBuf, found: String },
    #[error(
        "{path} was built for the traptor plugin ABI {found}, which this host does not run \
         (it runs ABI {range}, built against traptor-sdk / wit {ABI_VERSION}): rebuild the plugin against that version",
        range = abi_range()
    )]
    WrongAbi { path: PathBuf, found: String },
    #[error("{path} cannot be linked: {message}")]
    Link { path: PathBuf, message: String },
    #[error("cannot start an instance of {path}: {message}")]
    Instantiate { path: PathBuf, message: String },
    #[error("{path}: `describe` failed: {message}")]
    Describe { path: PathBuf, message: String },
    #[error("stage {stage:?} refused its configuration: {message}")]
    Config { stage: String, message: String },
    #[error("stage {stage:?}: {message}")]
    Grant { stage: String, message: String },
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
    #[error(transparent)]
    Oci(#[from] oci::OciError),
    #[error(transparent)]
    Signing(#[from] signing::SigningError),
    #[error("{path}: {message}")]
    Pipeline { path: PathBuf, message: String },
}

impl PluginError {
    /// A registry that cannot be reached or refuses is the outside world's
    /// fault; everything else (a reference, a file, a lock, a component) is
    /// the caller's to fix.
    pub fn kind(&self) -> crate::exit::ErrorKind {
        use crate::exit::ErrorKind;
        match self {
            PluginError::Oci(oci::OciError::Registry { .. } | oci::OciError::Runtime(_)) => ErrorKind::Runtime,
            _ => ErrorKind::Config,
        }
    }
}

/// Store data of one plugin instance.
pub struct StageState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    stage: Arc<str>,
    metrics: Arc<StageMetrics>,
    output: wasmtime_wasi::p2::pipe::MemoryOutputPipe,
    calls: CallTimes,
}

/// Top-level calls into the guest during one `process` call (see
/// `stage::time_calls`): start and end of each, nested depth.
#[derive(Debug, Default)]
struct CallTimes {
    depth: u32,
    open: Option<std::time::Instant>,
    spans: Vec<(std::time::Instant, std::time::Instant)>,
}

impl std::fmt::Debug for StageState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageState").field("stage", &self.stage).finish_non_exhaustive()
    }
}

impl WasiView for StageState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

// The `types` interfaces have no functions; their traits are empty.
impl bindings::traptor::plugin::types::Host for StageState {}
impl bindings_v01::traptor::plugin::types::Host for StageState {}

/// ABI 0.1's `host` interface is the same as the current one.
impl bindings_v01::traptor::plugin::host::Host for StageState {
    fn log(
        &mut self,
        level: bindings_v01::traptor::plugin::host::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) {
        use bindings::traptor::plugin::host::{Host, Level};
        use bindings_v01::traptor::plugin::host::Level as Old;
        let level = match level {
            Old::Trace => Level::Trace,
            Old::Debug => Level::Debug,
            Old::Info => Level::Info,
            Old::Warn => Level::Warn,
            Old::Error => Level::Error,
        };
        Host::log(self, level, message, fields);
    }

    fn counter(&mut self, name: String, delta: u64) {
        self.metrics.plugin_counter(&name, delta);
    }
}

impl bindings::traptor::plugin::host::Host for StageState {
    fn log(&mut self, level: bindings::traptor::plugin::host::Level, message: String, fields: Vec<(String, String)>) {
        use bindings::traptor::plugin::host::Level;
        let fields = fields.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
        let stage = &*self.stage;
        match level {
            Level::Trace => tracing::trace!(stage, fields, "plugin: {message}"),
            Level::Debug => tracing::debug!(stage, fields, "plugin: {message}"),
            Level::Info => tracing::info!(stage, fields, "plugin: {message}"),
            Level::Warn => tracing::warn!(stage, fields, "plugin: {message}"),
            Level::Error => tracing::error!(stage, fields, "plugin: {message}"),
        }
    }

    fn counter(&mut self, name: String, delta: u64) {
        self.metrics.plugin_counter(&name, delta);
    }
}

/// Caps linear memory per store; remembers that it refused, so a trap caused
/// by the cap is reported as out-of-memory, not as a generic trap.
struct MemoryLimiter {
    max_bytes: usize,
    refused: bool,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.refused = true;
            wasmtime::bail!("memory limit of {} MiB reached", self.max_bytes >> 20);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 10_000_000)
    }
}

/// The wall clock a plugin sees unless granted the clock: always the epoch.
struct FrozenClock;

impl wasmtime_wasi::HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

/// The monotonic clock a plugin sees unless granted the clock: it tells
/// nothing of real time — it starts at 1 s and moves 1 µs per reading. Some
/// runtimes refuse a clock that reads zero or never moves (Go's aborts at
/// start-up with "nanotime returning zero").
#[derive(Default)]
struct SteppingClock(std::sync::atomic::AtomicU64);

impl wasmtime_wasi::HostMonotonicClock for SteppingClock {
    fn resolution(&self) -> u64 {
        1_000
    }
    fn now(&self) -> u64 {
        1_000_000_000 + self.0.fetch_add(1_000, Ordering::Relaxed)
    }
}

/// The engine, the linker and the epoch ticker.
pub struct Runtime {
    engine: Engine,
    linker: Linker<StageState>,
    cache_dir: Option<PathBuf>,
    stop_ticker: Arc<AtomicBool>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("cache_dir", &self.cache_dir).finish_non_exhaustive()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    /// Build the engine. `cache_dir` holds compiled components (`None`: no cache).
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Arc<Runtime>, PluginError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        // No component-model async here: halves the cost of a call (notes/wasm-runtime.md).
        config.concurrency_support(false);
        let engine = Engine::new(&config).map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        bindings::Plugin::add_to_linker::<StageState, HasSelf<StageState>>(&mut linker, |s| s)
            .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        bindings_v01::Plugin::add_to_linker::<StageState, HasSelf<StageState>>(&mut linker, |s| s)
            .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        let stop_ticker = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop_ticker.clone();
            std::thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| PluginError::Engine(e.to_string()))?;
        }
        Ok(Arc::new(Runtime { engine, linker, cache_dir, stop_ticker }))
    }

    /// The default cache directory: `$TRAPTOR_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/traptor/wasm`, else `~/.cache/traptor/wasm`.
    pub fn default_cache_dir() -> Option<PathBuf> {
        if let Some(d) = std::env::var_os("TRAPTOR_CACHE_DIR") {
            return Some(PathBuf::from(d).join("wasm"));
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("traptor").join("wasm"))
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compile (or load from the cache) a component and check its ABI.
    pub fn load(&self, path: &Path) -> Result<LoadedComponent, PluginError> {
        let bytes = std::fs::read(path).map_err(|source| PluginError::Read { path: path.to_owned(), source })?;
        let (component, from_cache) = cache::compile(&self.engine, &bytes, path, self.cache_dir.as_deref())?;
        let ty = component.component_type();
        let exports: Vec<String> = ty.exports(&self.engine).map(|(n, _)| n.to_owned()).collect();
        let imports: Vec<String> = ty.imports(&self.engine).map(|(n, _)| n.to_owned()).collect();
        let prefix = format!("{STAGE_INTERFACE}@");
        let Some(abi) = exports.iter().find_map(|e| e.strip_prefix(&prefix)).map(str::to_owned) else {
            let found = if exports.is_empty() { "nothing".to_owned() } else { exports.join(", ") };
            return Err(PluginError::NotAPlugin { path: path.to_owned(), found });
        };
        let Some(version) = abi_of(&abi) else {
            return Err(PluginError::WrongAbi { path: path.to_owned(), found: abi });
        };
        let link = |e: wasmtime::Error| PluginError::Link { path: path.to_owned(), message: format!("{e:#}") };
        let pre = self.linker.instantiate_pre(&component).map_err(link)?;
        let pre = match version {
            Abi::V0_2 => AbiPre::V0_2(bindings::PluginPre::new(pre).map_err(link)?),
            Abi::V0_1 => AbiPre::V0_1(bindings_v01::PluginPre::new(pre).map_err(link)?),
        };
        Ok(LoadedComponent {
            pre,
            version,
            path: path.to_owned(),
            size: bytes.len() as u64,
            sha256: cache::hex_sha256(&bytes),
            from_cache,
            abi,
            exports,
            imports,
        })
    }
}

/// A component linked against the world of its ABI.
pub(crate) enum AbiPre {
    V0_1(bindings_v01::PluginPre<StageState>),
    V0_2(bindings::PluginPre<StageState>),
}

/// A compiled, linked component.
pub struct LoadedComponent {
    pub(crate) pre: AbiPre,
    /// The world it runs in.
    pub version: Abi,
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
    /// Whether the compiled code came from the disk cache.
    pub from_cache: bool,
    /// The ABI version the component was built for (compatible with [`ABI_VERSION`]).
    pub abi: String,
    pub exports: Vec<String>,
    pub imports: Vec<String>,
}

impl std::fmt::Debug for LoadedComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedComponent")
            .field("path", &self.path)
            .field("size", &self.size)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

/// Parse a pipeline `config` table into the JSON text `init` receives.
pub fn config_json(table: &toml::Table) -> String {
    fn conv(v: &toml::Value) -> serde_json::Value {
        match v {
            toml::Value::String(s) => serde_json::Value::String(s.clone()),
            toml::Value::Integer(i) => serde_json::Value::from(*i),
            toml::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into),
            toml::Value::Boolean(b) => serde_json::Value::Bool(*b),
            toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
            toml::Value::Array(a) => serde_json::Value::Array(a.iter().map(conv).collect()),
            toml::Value::Table(t) => serde_json::Value::Object(t.iter().map(|(k, v)| (k.clone(), conv(v))).collect()),
        }
    }
    serde_json::Value::Object(table.iter().map(|(k, v)| (k.clone(), conv(v))).collect()).to_string()
}
