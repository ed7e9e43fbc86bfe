//! A configured stage and its per-worker instances.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use super::stages::OnError;
use super::{
    EPOCH_TICK, FrozenClock, LoadedComponent, MemoryLimiter, PluginError, Runtime, StageMetrics, StageState, bindings,
    wit,
};

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
    pub description: wit::Description,
    pub metrics: Arc<StageMetrics>,
    component: LoadedComponent,
    runtime: Arc<Runtime>,
    breaker: Mutex<Breaker>,
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
        match probe.init(&spec.config_json, spec.init_timeout) {
            Ok(Ok(())) => {}
            Ok(Err(message)) => return Err(PluginError::Config { stage: spec.name.clone(), message }),
            Err(e) => {
                return Err(PluginError::Config { stage: spec.name.clone(), message: format!("init failed: {e}") });
            }
        }
        Ok(Stage { spec, name, description, metrics, component, runtime: runtime.clone(), breaker: Mutex::default() })
    }

    /// Load and describe a plugin without configuring it (`plugin inspect`).
    pub fn describe_only(
        runtime: &Arc<Runtime>,
        spec: &StageSpec,
    ) -> Result<(LoadedComponent, wit::Description), PluginError> {
        let component = runtime.load(&spec.plugin)?;
        let name: Arc<str> = spec.name.as_str().into();
        let metrics = Arc::new(StageMetrics::default());
        let mut probe = StageInstance::new(runtime, &component, spec, &name, &metrics)?;
        let d = probe
            .describe()
            .map_err(|e| PluginError::Describe { path: spec.plugin.clone(), message: e.to_string() })?;
        Ok((component, d))
    }

    pub fn component(&self) -> &LoadedComponent {
        &self.component
    }

    /// A fresh, initialised instance for one worker.
    pub fn instance(&self) -> Result<StageInstance, CallFailure> {
        let mut inst = StageInstance::new(&self.runtime, &self.component, &self.spec, &self.name, &self.metrics)
            .map_err(|e| CallFailure::Instantiate(e.to_string()))?;
        match inst.init(&self.spec.config_json, self.spec.init_timeout) {
            Ok(Ok(())) => Ok(inst),
            Ok(Err(m)) => Err(CallFailure::Instantiate(format!("init refused the configuration: {m}"))),
            Err(e) => Err(e),
        }
    }

    pub fn wants_raw(&self) -> bool {
        self.description.wants_raw
    }

    /// Run one batch through this stage with the worker's instance in `slot`
    /// (built if empty, dropped after a failure). Returns one outcome per post,
    /// or why the whole batch failed.
    pub fn process(
        &self,
        slot: &mut Option<StageInstance>,
        batch: &[wit::Post],
    ) -> Result<Vec<wit::Outcome>, CallFailure> {
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
        let result = inst.process(batch, self.spec.timeout);
        m.observe_latency(start.elapsed());
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
    plugin: bindings::Plugin,
}

impl std::fmt::Debug for StageInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageInstance").finish_non_exhaustive()
    }
}

fn ticks(d: Duration) -> u64 {
    (d.as_nanos() / EPOCH_TICK.as_nanos()).max(1) as u64
}

impl StageInstance {
    fn new(
        runtime: &Runtime,
        component: &LoadedComponent,
        spec: &StageSpec,
        name: &Arc<str>,
        metrics: &Arc<StageMetrics>,
    ) -> Result<StageInstance, PluginError> {
        let output = MemoryOutputPipe::new(16 * 1024);
        let mut b = WasiCtxBuilder::new();
        b.stdout(output.clone()).stderr(output.clone());
        if !spec.grant_clock {
            b.wall_clock(FrozenClock).monotonic_clock(FrozenClock);
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
        let state = StageState {
            wasi: b.build(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter { max_bytes: spec.memory_limit_bytes, refused: false },
            stage: name.clone(),
            metrics: metrics.clone(),
            output,
        };
        let mut store = Store::new(runtime.engine(), state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(ticks(spec.init_timeout));
        metrics.instantiations.fetch_add(1, Relaxed);
        let plugin = component.pre.instantiate(&mut store).map_err(|e| {
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
        })?;
        Ok(StageInstance { store, plugin })
    }

    fn classify(&self, e: wasmtime::Error, timeout: Duration) -> CallFailure {
        if self.store.data().limiter.refused {
            return CallFailure::OutOfMemory(first_line(&format!("{e:#}")));
        }
        if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            return CallFailure::Timeout(timeout.as_millis() as u64);
        }
        let mut msg = first_line(&format!("{e:#}"));
        // Rust guests print `thread '…' panicked at src/lib.rs:50:13:` and the
        // message on the next line; keep both for the report.
        let out = self.guest_output();
        let mut lines = out.lines();
        if let Some(panic) = lines.find(|l| l.contains("panicked")) {
            msg.push_str(" — ");
            msg.push_str(panic.trim());
            if let Some(next) = lines.next().filter(|l| !l.starts_with("stack backtrace") && !l.starts_with("note:")) {
                msg.push(' ');
                msg.push_str(next.trim());
            }
        }
        CallFailure::Trap(msg)
    }

    pub fn describe(&mut self) -> Result<wit::Description, CallFailure> {
        self.store.set_epoch_deadline(ticks(Duration::from_secs(10)));
        let r = self.plugin.traptor_plugin_stage().call_describe(&mut self.store);
        r.map_err(|e| self.classify(e, Duration::from_secs(10)))
    }

    /// Outer error: the call failed; inner: the plugin refused the config.
    pub fn init(&mut self, config_json: &str, timeout: Duration) -> Result<Result<(), String>, CallFailure> {
        self.store.set_epoch_deadline(ticks(timeout));
        let r = self.plugin.traptor_plugin_stage().call_init(&mut self.store, config_json);
        r.map_err(|e| self.classify(e, timeout))
    }

    pub fn process(&mut self, batch: &[wit::Post], timeout: Duration) -> Result<Vec<wit::Outcome>, CallFailure> {
        self.store.set_epoch_deadline(ticks(timeout));
        let r = self.plugin.traptor_plugin_stage().call_process(&mut self.store, batch);
        let outcomes = r.map_err(|e| self.classify(e, timeout))?;
        if outcomes.len() != batch.len() {
            return Err(CallFailure::Protocol(format!(
                "returned {} outcomes for {} posts",
                outcomes.len(),
                batch.len()
            )));
        }
        Ok(outcomes)
    }

    /// The last few KiB the guest wrote to stdout/stderr.
    pub fn guest_output(&self) -> String {
        let bytes = self.store.data().output.contents();
        let tail = &bytes[bytes.len().saturating_sub(2048)..];
        String::from_utf8_lossy(tail).trim().to_owned()
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_owned()
}
