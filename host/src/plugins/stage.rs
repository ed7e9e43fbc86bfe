//! A configured stage and its per-worker instances.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use wasmtime::component::{ResourceTable, TypedFunc};
use wasmtime::{CallHook, Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use super::answers::{Answers, Description, StagePost, all_but_raw};
use super::convert::{answers_from_v01, to_v01_post};
use super::lower::Encoder;
use super::stages::OnError;
use super::{
    AbiPre, CallTimes, EPOCH_TICK, FrozenClock, LoadedComponent, MemoryLimiter, PluginError, Runtime, STAGE_INTERFACE,
    StageMetrics, StageState, SteppingClock, bindings, bindings_v01, wit,
};
use crate::rules::Rule;

/// Everything needed to run one `[[stages]]` entry.
#[derive(Debug, Clone)]
pub struct StageSpec {
    pub name: String,
    pub plugin: PathBuf,
    /// The `config` table as JSON text, handed to `init`.
    pub config_json: String,
    pub on_error: OnError,
    pub memory_limit_bytes: usize,
    /// Deadline of one `process` call.
    pub timeout: Duration,
    /// Deadline of instantiation plus `init` (interpreted guests boot slowly).
    pub init_timeout: Duration,
    /// Let the plugin read the real clocks (otherwise they stand still at 0).
    pub grant_clock: bool,
    /// Environment variables passed through (names; values from the host).
    pub grant_env: Vec<String>,
    /// Directories opened read-only, at the same path inside the plugin.
    pub grant_dirs: Vec<PathBuf>,
    /// Consecutive failed batches that open the circuit (0 = never).
    pub breaker_failures: u32,
    /// How long an open circuit bypasses the stage before trying again.
    pub breaker_cooldown: Duration,
}

/// Why a whole batch failed in a stage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallFailure {
    #[error("plugin trapped: {0}")]
    Trap(String),
    #[error("plugin exceeded its time limit of {0} ms")]
    Timeout(u64),
    #[error("plugin exceeded its memory limit: {0}")]
    OutOfMemory(String),
    #[error("plugin broke the ABI: {0}")]
    Protocol(String),
    #[error("cannot start the plugin: {0}")]
    Instantiate(String),
    #[error("stage is circuit-broken after repeated failures; bypassed until the cool-down ends")]
    CircuitOpen,
}

#[derive(Debug, Default)]
struct Breaker {
    consecutive: u32,
    open_until: Option<Instant>,
}

/// A loaded, configured stage; shared by every worker.
pub struct Stage {
    pub spec: StageSpec,
    pub name: Arc<str>,
    /// The name as a JSON string, the key of its enrichments (written once).
    pub key_json: String,
    pub description: Description,
    /// The fields this configuration reads (what `init` answered; for a 0.1
    /// component everything it was always sent).
    pub reads: wit::Fields,
    pub metrics: Arc<StageMetrics>,
    /// Where the component came from, as `provenance.stages` names it.
    pub origin: StageOrigin,
    /// A candidate version run beside it on a sample (`shadow = {…}`).
    pub shadow: Option<Box<Shadow>>,
    component: LoadedComponent,
    runtime: Arc<Runtime>,
    breaker: Mutex<Breaker>,
}

/// A shadow stage's candidate and what it has seen.
#[derive(Debug)]
pub struct Shadow {
    pub stage: Stage,
    pub sample: f64,
    pub stats: Arc<super::shadow::ShadowStats>,
}

/// A stage's component as the pipeline named it, and its digest: the
/// file's `sha256:` for a path, the manifest's for a registry component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageOrigin {
    pub plugin: String,
    pub digest: String,
}

impl std::fmt::Debug for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stage").field("name", &self.name).field("plugin", &self.spec.plugin).finish_non_exhaustive()
    }
}

impl Stage {
    /// Load the component, describe it and run `init` once with the stage's
    /// configuration, so a refused configuration fails here, naming the stage.
    pub fn load(runtime: &Arc<Runtime>, spec: StageSpec) -> Result<Stage, PluginError> {
        let component = runtime.load(&spec.plugin)?;
        let name: Arc<str> = spec.name.as_str().into();
        let metrics = Arc::new(StageMetrics::default());
        let mut probe = StageInstance::new(runtime, &component, &spec, &name, &metrics)?;
        let description = probe
            .describe()
            .map_err(|e| PluginError::Describe { path: spec.plugin.clone(), message: e.to_string() })?;
        let reads = match probe.init(&spec.config_json, spec.init_timeout) {
            Ok(Ok(reads)) => reads.unwrap_or(description.reads),
            Ok(Err(message)) => return Err(PluginError::Config { stage: spec.name.clone(), message }),
            Err(e) => {
                return Err(PluginError::Config { stage: spec.name.clone(), message: format!("init failed: {e}") });
            }
        };
        // What the configuration reads is at most what the plugin said it may read.
        let reads = reads & description.reads;
        let runtime = runtime.clone();
        let key_json = serde_json::Value::from(&*name).to_string();
        let origin =
            StageOrigin { plugin: spec.plugin.display().to_string(), digest: format!("sha256:{}", component.sha256) };
        Ok(Stage {
            spec,
            name,
            key_json,
            description,
            reads,
            metrics,
            origin,
            shadow: None,
            component,
            runtime,
            breaker: Mutex::default(),
        })
    }

    /// Load and describe a plugin without configuring it (`plugin inspect`).
    pub fn describe_only(
        runtime: &Arc<Runtime>,
        spec: &StageSpec,
    ) -> Result<(LoadedComponent, Description), PluginError> {
        let component = runtime.load(&spec.plugin)?;
        let name: Arc<str> = spec.name.as_str().into();
        let metrics = Arc::new(StageMetrics::default());
        let mut probe = StageInstance::new(runtime, &component, spec, &name, &metrics)?;
        let d = probe
            .describe()
            .map_err(|e| PluginError::Describe { path: spec.plugin.clone(), message: e.to_string() })?;
        Ok((component, d))
    }

    /// The median time to instantiate a loaded component `n` times (a store,
    /// its WASI context, the instance, its start-up code such as Go's
    /// runtime or C's constructors): what a new worker, or a restart after a
    /// trap, costs. Measured in-process (`plugin inspect`).
    pub fn instantiate_median(
        runtime: &Arc<Runtime>,
        component: &LoadedComponent,
        spec: &StageSpec,
        n: usize,
    ) -> Result<std::time::Duration, PluginError> {
        let name: Arc<str> = spec.name.as_str().into();
        let metrics = Arc::new(StageMetrics::default());
        let mut times = Vec::with_capacity(n.max(1));
        for _ in 0..n.max(1) {
            let started = std::time::Instant::now();
            let instance = StageInstance::new(runtime, component, spec, &name, &metrics)?;
            times.push(started.elapsed());
            drop(instance);
        }
        times.sort();
        Ok(times[times.len() / 2])
    }

    pub fn component(&self) -> &LoadedComponent {
        &self.component
    }

    /// A fresh, initialised instance for one worker.
    pub fn instance(&self) -> Result<StageInstance, CallFailure> {
        let mut inst = StageInstance::new(&self.runtime, &self.component, &self.spec, &self.name, &self.metrics)
            .map_err(|e| CallFailure::Instantiate(e.to_string()))?;
        match inst.init(&self.spec.config_json, self.spec.init_timeout) {
            Ok(Ok(_)) => Ok(inst),
            Ok(Err(m)) => Err(CallFailure::Instantiate(format!("init refused the configuration: {m}"))),
            Err(e) => Err(e),
        }
    }

    /// Run one batch through this stage with the worker's instance in `slot`
    /// (built if empty, dropped after a failure). Returns the changes (posts
    /// not named are kept), or why the whole batch failed. `rules` are the
    /// matcher's, which the posts' `matched` indices point into.
    pub fn process(
        &self,
        slot: &mut Option<StageInstance>,
        batch: &[StagePost<'_>],
        rules: &[Rule],
    ) -> Result<Answers, CallFailure> {
        if !self.circuit_allows() {
            return Err(CallFailure::CircuitOpen);
        }
        let m = &self.metrics;
        m.batches.fetch_add(1, Relaxed);
        m.posts_in.fetch_add(batch.len() as u64, Relaxed);
        let inst = match slot {
            Some(i) => i,
            None => match self.instance() {
                Ok(i) => slot.insert(i),
                Err(e) => {
                    self.record_failure(&e);
                    return Err(e);
                }
            },
        };
        let start = Instant::now();
        let result = inst.process(batch, rules, self.reads, self.spec.timeout);
        m.observe_call(start.elapsed(), batch.len(), inst.parts.take());
        match result {
            Ok(outcomes) => {
                self.record_success();
                Ok(outcomes)
            }
            Err(e) => {
                if !matches!(e, CallFailure::Protocol(_)) {
                    // Never re-enter an instance that trapped.
                    let output = inst.guest_output();
                    *slot = None;
                    if !output.is_empty() {
                        tracing::warn!(stage = &*self.name, output = %output, "plugin output before the failure");
                    }
                }
                self.record_failure(&e);
                Err(e)
            }
        }
    }

    /// True while the circuit is open (the stage bypassed).
    pub fn circuit_open(&self) -> bool {
        self.breaker.lock().is_ok_and(|b| b.open_until.is_some_and(|t| Instant::now() < t))
    }

    fn circuit_allows(&self) -> bool {
        let Ok(mut b) = self.breaker.lock() else { return true };
        match b.open_until {
            Some(t) if Instant::now() < t => false,
            Some(_) => {
                // Half-open: let this batch try; one more failure re-opens.
                b.open_until = None;
                b.consecutive = self.spec.breaker_failures.saturating_sub(1);
                tracing::info!(stage = &*self.name, "circuit half-open: trying the stage again");
                true
            }
            None => true,
        }
    }

    fn record_success(&self) {
        if let Ok(mut b) = self.breaker.lock() {
            b.consecutive = 0;
        }
    }

    fn record_failure(&self, e: &CallFailure) {
        let m = &self.metrics;
        match e {
            CallFailure::Trap(_) | CallFailure::Instantiate(_) => m.traps.fetch_add(1, Relaxed),
            CallFailure::Timeout(_) => m.timeouts.fetch_add(1, Relaxed),
            CallFailure::OutOfMemory(_) => m.out_of_memory.fetch_add(1, Relaxed),
            CallFailure::Protocol(_) => m.protocol_errors.fetch_add(1, Relaxed),
            CallFailure::CircuitOpen => 0,
        };
        tracing::warn!(stage = &*self.name, error = %e, "stage failed a batch");
        let threshold = self.spec.breaker_failures;
        if threshold == 0 {
            return;
        }
        if let Ok(mut b) = self.breaker.lock() {
            b.consecutive += 1;
            if b.consecutive >= threshold && b.open_until.is_none() {
                b.open_until = Some(Instant::now() + self.spec.breaker_cooldown);
                m.circuit_opened.fetch_add(1, Relaxed);
                tracing::error!(
                    stage = &*self.name,
                    failures = b.consecutive,
                    cooldown_secs = self.spec.breaker_cooldown.as_secs(),
                    "circuit opened: the stage keeps failing and is bypassed (posts follow on_error)"
                );
            }
        }
    }
}

/// One store + instance of a stage, owned by one worker.
pub struct StageInstance {
    store: Store<StageState>,
    abi: AbiInstance,
    /// How the last `process` call's time split, when it was measured.
    pub(crate) parts: Option<Parts>,
}

/// The exports of an instance, in the world of its ABI.
enum AbiInstance {
    V0_1(bindings_v01::Plugin),
    V0_2 {
        plugin: bindings::Plugin,
        /// `process`, typed by hand so its call can be timed part by part.
        process: TypedFunc<(&'static wit::Batch,), (wit::Results,)>,
        encoder: Box<Encoder>,
    },
}

/// Where a `process` call's time went, in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Parts {
    /// The host building the batch (its own records, before the call).
    pub prepare: u64,
    /// Copying the batch into the guest (the calls to its allocator).
    pub lower: u64,
    /// The guest's own `process`.
    pub guest: u64,
    /// Reading the answers back and the guest freeing what it returned.
    pub lift: u64,
}

impl std::fmt::Debug for StageInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageInstance").finish_non_exhaustive()
    }
}

fn ticks(d: Duration) -> u64 {
    (d.as_nanos() / EPOCH_TICK.as_nanos()).max(1) as u64
}

/// Records when top-level calls into the guest start and end (its allocator
/// while the host lowers, then `process`, then its post-return), so a call's
/// time can be split without timers inside the guest.
fn time_calls(mut store: wasmtime::StoreContextMut<'_, StageState>, hook: CallHook) -> wasmtime::Result<()> {
    let t: &mut CallTimes = &mut store.data_mut().calls;
    match hook {
        CallHook::CallingWasm => {
            t.depth += 1;
            if t.depth == 1 {
                t.open = Some(Instant::now());
            }
        }
        CallHook::ReturningFromWasm => {
            if t.depth == 1
                && let Some(start) = t.open.take()
            {
                t.spans.push((start, Instant::now()));
            }
            t.depth = t.depth.saturating_sub(1);
        }
        CallHook::CallingHost | CallHook::ReturningFromHost => {}
    }
    Ok(())
}

impl StageInstance {
    fn new(
        runtime: &Runtime,
        component: &LoadedComponent,
        spec: &StageSpec,
        name: &Arc<str>,
        metrics: &Arc<StageMetrics>,
    ) -> Result<StageInstance, PluginError> {
        let mut store = Store::new(runtime.engine(), stage_state(spec, name, metrics)?);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(ticks(spec.init_timeout));
        metrics.instantiations.fetch_add(1, Relaxed);
        let failed = |store: &Store<StageState>, e: wasmtime::Error| {
            let refused = store.data().limiter.refused;
            PluginError::Instantiate {
                path: spec.plugin.clone(),
                message: if refused {
                    format!(
                        "the plugin needs more than its memory limit of {} MiB to start (raise memory_limit_mib): {e:#}",
                        spec.memory_limit_bytes >> 20
                    )
                } else {
                    format!("{e:#}")
                },
            }
        };
        let abi = match &component.pre {
            AbiPre::V0_1(pre) => AbiInstance::V0_1(pre.instantiate(&mut store).map_err(|e| failed(&store, e))?),
            AbiPre::V0_2(pre) => {
                let instance = pre.instance_pre().instantiate(&mut store).map_err(|e| failed(&store, e))?;
                let plugin = bindings::Plugin::new(&mut store, &instance).map_err(|e| failed(&store, e))?;
                let iface = format!("{STAGE_INTERFACE}@{}", component.abi);
                let process = instance
                    .get_export_index(&mut store, None, &iface)
                    .and_then(|i| instance.get_export_index(&mut store, Some(&i), "process"))
                    .ok_or_else(|| failed(&store, wasmtime::format_err!("no `process` in `{iface}`")))?;
                let process = instance.get_typed_func(&mut store, process).map_err(|e| failed(&store, e))?;
                AbiInstance::V0_2 { plugin, process, encoder: Box::default() }
            }
        };
        store.call_hook(time_calls);
        Ok(StageInstance { store, abi, parts: None })
    }

    fn classify(&self, e: wasmtime::Error, timeout: Duration) -> CallFailure {
        if self.store.data().limiter.refused {
            return CallFailure::OutOfMemory(first_line(&format!("{e:#}")));
        }
        if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            return CallFailure::Timeout(timeout.as_millis() as u64);
        }
        tracing::debug!(error = format!("{e:?}"), "trap with its wasm backtrace");
        // wasmtime's message starts with "error while executing at wasm
        // backtrace:"; what happened is the root cause ("wasm trap: …").
        let mut msg = first_line(&e.root_cause().to_string());
        // Rust guests print `thread '…' panicked at src/lib.rs:50:13:` and the
        // message on the next line; Go prints `panic: …` or `fatal error: …`,
        // the C SDK `traptor: …`: keep them for the report.
        let out = self.guest_output();
        let mut lines = out.lines();
        if let Some(l) =
            out.lines().find(|l| ["panic: ", "fatal error: ", "traptor: "].iter().any(|p| l.starts_with(p)))
        {
            msg.push_str(" — ");
            msg.push_str(l.trim());
        } else if let Some(panic) = lines.find(|l| l.contains("panicked")) {
            msg.push_str(" — ");
            msg.push_str(panic.trim());
            if let Some(next) = lines.next().filter(|l| !l.starts_with("stack backtrace") && !l.starts_with("note:")) {
                msg.push(' ');
                msg.push_str(next.trim());
            }
        }
        CallFailure::Trap(msg)
    }

    pub fn describe(&mut self) -> Result<Description, CallFailure> {
        let limit = Duration::from_secs(10);
        self.store.set_epoch_deadline(ticks(limit));
        let r = match &self.abi {
            AbiInstance::V0_2 { plugin, .. } => {
                plugin.traptor_plugin_stage().call_describe(&mut self.store).map(Into::into)
            }
            AbiInstance::V0_1(plugin) => plugin.traptor_plugin_stage().call_describe(&mut self.store).map(from_v01),
        };
        r.map_err(|e| self.classify(e, limit))
    }

    /// Outer error: the call failed; inner: the plugin refused the config.
    /// `Some(fields)`: what this configuration reads (0.2); `None` for 0.1.
    pub fn init(
        &mut self,
        config_json: &str,
        timeout: Duration,
    ) -> Result<Result<Option<wit::Fields>, String>, CallFailure> {
        self.store.set_epoch_deadline(ticks(timeout));
        let r = match &self.abi {
            AbiInstance::V0_2 { plugin, .. } => {
                plugin.traptor_plugin_stage().call_init(&mut self.store, config_json).map(|r| r.map(Some))
            }
            AbiInstance::V0_1(plugin) => {
                plugin.traptor_plugin_stage().call_init(&mut self.store, config_json).map(|r| r.map(|()| None))
            }
        };
        r.map_err(|e| self.classify(e, timeout))
    }

    /// One batch through the plugin; its changes, checked against the batch.
    pub fn process(
        &mut self,
        batch: &[StagePost<'_>],
        rules: &[Rule],
        reads: wit::Fields,
        timeout: Duration,
    ) -> Result<Answers, CallFailure> {
        let start = Instant::now();
        let calls = &mut self.store.data_mut().calls;
        calls.spans.clear();
        calls.depth = 0;
        let (answers, prepared, main_call) = match &mut self.abi {
            AbiInstance::V0_2 { process, encoder, .. } => {
                let encoded = encoder.encode(batch, rules, reads).map_err(|e| CallFailure::Protocol(e.to_string()))?;
                let prepared = Instant::now();
                self.store.set_epoch_deadline(ticks(timeout));
                // Typed with a `'static` batch; wasmtime makes it covariant in
                // its parameters, as a call only borrows them.
                let process: &TypedFunc<(&wit::Batch,), (wit::Results,)> = process;
                let r = process.call(&mut self.store, (encoded,));
                let (results,) = r.map_err(|e| self.classify(e, timeout))?;
                let answers = Answers::from_results(results, batch.len()).map_err(CallFailure::Protocol)?;
                // The guest's allocator is called once per list of the batch
                // (five) before `process` itself.
                (answers, prepared, Some(5))
            }
            AbiInstance::V0_1(plugin) => {
                let posts: Vec<_> = batch
                    .iter()
                    .map(|p| {
                        to_v01_post(
                            p.view,
                            p.raw,
                            p.matched.iter().filter_map(|&r| rules.get(r as usize)),
                            reads.contains(wit::Fields::RAW),
                        )
                    })
                    .collect();
                let prepared = Instant::now();
                self.store.set_epoch_deadline(ticks(timeout));
                let r = plugin.traptor_plugin_stage().call_process(&mut self.store, &posts);
                let outcomes = r.map_err(|e| self.classify(e, timeout))?;
                if outcomes.len() != batch.len() {
                    return Err(CallFailure::Protocol(format!(
                        "returned {} outcomes for {} posts",
                        outcomes.len(),
                        batch.len()
                    )));
                }
                (answers_from_v01(outcomes), prepared, None)
            }
        };
        let end = Instant::now();
        self.parts = Some(split(start, prepared, end, &self.store.data().calls.spans, main_call));
        Ok(answers)
    }

    /// The last few KiB the guest wrote to stdout/stderr.
    pub fn guest_output(&self) -> String {
        let bytes = self.store.data().output.contents();
        let tail = &bytes[bytes.len().saturating_sub(2048)..];
        String::from_utf8_lossy(tail).trim().to_owned()
    }
}

/// Split a call's time: `main` is the index of the guest's `process` among
/// the top-level calls into it (`None`: the longest one — for 0.1, whose
/// allocator calls vary with the batch).
fn split(start: Instant, prepared: Instant, end: Instant, spans: &[(Instant, Instant)], main: Option<usize>) -> Parts {
    let ns = |a: Instant, b: Instant| b.saturating_duration_since(a).as_nanos() as u64;
    let main = match main {
        Some(m) => Some(m).filter(|&m| m < spans.len()),
        None => spans.iter().enumerate().max_by_key(|(_, (a, b))| ns(*a, *b)).map(|(i, _)| i),
    };
    let prepare = ns(start, prepared);
    match main.map(|m| spans[m]) {
        Some((enter, exit)) => {
            Parts { prepare, lower: ns(prepared, enter), guest: ns(enter, exit), lift: ns(exit, end) }
        }
        None => Parts { prepare, lower: 0, guest: ns(prepared, end), lift: 0 },
    }
}

/// A 0.1 description: it was sent every field, and `raw` when it asked.
fn from_v01(d: super::wit_v01::Description) -> Description {
    use super::answers::StageKind;
    Description {
        name: d.name,
        version: d.version,
        kind: match d.kind {
            super::wit_v01::StageKind::Enricher => StageKind::Enricher,
            super::wit_v01::StageKind::Filter => StageKind::Filter,
        },
        summary: d.summary,
        config_schema: d.config_schema,
        reads: if d.wants_raw { all_but_raw() | wit::Fields::RAW } else { all_but_raw() },
    }
}

/// The store's data: WASI granting only what the stage's spec grants.
fn stage_state(spec: &StageSpec, name: &Arc<str>, metrics: &Arc<StageMetrics>) -> Result<StageState, PluginError> {
    let output = MemoryOutputPipe::new(16 * 1024);
    let mut b = WasiCtxBuilder::new();
    b.stdout(output.clone()).stderr(output.clone());
    if !spec.grant_clock {
        b.wall_clock(FrozenClock).monotonic_clock(SteppingClock::default());
    }
    for k in &spec.grant_env {
        if let Ok(v) = std::env::var(k) {
            b.env(k, v);
        }
    }
    for d in &spec.grant_dirs {
        let guest = d.to_string_lossy().into_owned();
        b.preopened_dir(d, guest, FsPerms::ReadOnly).map_err(|e| PluginError::Grant {
            stage: spec.name.clone(),
            message: format!("cannot open granted directory {}: {e:#}", d.display()),
        })?;
    }
    Ok(StageState {
        wasi: b.build(),
        table: ResourceTable::new(),
        limiter: MemoryLimiter { max_bytes: spec.memory_limit_bytes, refused: false },
        stage: name.clone(),
        metrics: metrics.clone(),
        output,
        calls: CallTimes::default(),
    })
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_owned()
}
