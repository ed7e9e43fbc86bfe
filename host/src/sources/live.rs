//! One driver for every live connection (STYLE 16; the split hbc made between
//! its client loop and its message processors).
//!
//! A [`Connector`] knows one protocol: it opens a connection and turns what
//! arrives into [`Frame`]s (keep-alive; a record with its dedup key and
//! checkpoint; the end of the connection with the reason). The [`Live`] driver
//! owns everything else, once for all sources:
//!
//! * **batching** — records go into a [`Batcher`]; a partial batch is sent
//!   every `batch_timeout_ms`;
//! * **the stall deadline** — absolute, renewed only by data or a keep-alive,
//!   so the flush timer cannot postpone it;
//! * **dedup** — records whose key was seen within the last `dedup_window`
//!   keys are dropped and counted (`duplicates` in the throughput line);
//!   redeliveries after a reconnect are the usual cause;
//! * **health** — a connection marks the collector healthy; credentials
//!   refused (401/403) mark it unhealthy (heartbeat withheld) and stop;
//! * **reconnects** — by the backoff table of [`super::backoff`];
//! * **rule changes** — when the connector says its request depends on the
//!   rules (v1.1 puts them in the request), a change reconnects at most once
//!   per `min_rule_reconnect`, changes in between coalesce.
//!
//! State is owned by the driver and lent to one attempt at a time: no locks.
//! A connector's `read` awaits the wire once and then frames synchronously,
//! so it is cancel-safe inside the driver's `select!`.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::backoff::{Backoff, Decision, Failure};
pub use super::live_config::{DEFAULT_DEDUP_WINDOW, LiveSettings};
pub(crate) use super::live_config::{default_dedup_window, live_source_config};
use super::{BatchTx, Batching, RunSource, SourceContext, SourceError, SourceFuture, SourceSummary};
use crate::batch::Batcher;
use crate::key_pool::{KeyPoolHandle, PooledKey};
use crate::rules::RuleSnapshot;
use crate::secret::{Secret, SecretRef};
use crate::telemetry::{ConnectionStats, Health, Metrics};

/// What a connector found on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Proof of life only (renews the stall deadline).
    KeepAlive,
    /// A message longer than `max_record_bytes` went by without being held:
    /// counted as malformed.
    Oversized,
    /// One message for the workers. `dedup`: its identity, to drop a
    /// redelivery; `checkpoint`: the source position it reaches.
    Record { bytes: Vec<u8>, dedup: Option<String>, checkpoint: Option<u64> },
    /// The connection must end: `record` (an in-stream disconnect notice) is
    /// forwarded first, then `failure` decides the wait.
    End { record: Option<Vec<u8>>, failure: Failure },
}

/// One open connection.
pub trait Connection: Send {
    /// Await the next piece from the wire (once), append what it completes
    /// to `frames`. An error ends the connection (closed, reset, unreadable).
    fn read(&mut self, frames: &mut Vec<Frame>) -> impl Future<Output = Result<(), Failure>> + Send;
    /// When the bytes of the last `read` came off the wire (before they were
    /// framed and classified): where a record's end-to-end latency starts.
    fn arrived(&self) -> Option<std::time::Instant> {
        None
    }
    /// Say goodbye where the protocol has a way to (WebSocket close).
    fn close(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// What the helpers a connector runs beside its connections may use.
#[derive(Debug, Clone)]
pub struct LiveContext {
    pub rules: watch::Receiver<Arc<RuleSnapshot>>,
    pub health: Arc<Health>,
    pub shutdown: CancellationToken,
}

/// One protocol: connect and frame.
pub trait Connector: Send + 'static {
    type Connection: Connection;
    /// The source's name in logs (`x_filtered_stream`).
    fn name(&self) -> &'static str;
    /// Once, before the first connection (X rule sync, Jetstream cursor). An
    /// error that stops (401/403) stops the source; others are logged.
    fn start(&mut self, _cx: &LiveContext) -> impl Future<Output = Result<(), Failure>> + Send {
        async { Ok(()) }
    }
    /// Open one connection with the current rules; say why not if it fails.
    fn connect(&mut self, rules: &RuleSnapshot) -> impl Future<Output = Result<Self::Connection, Failure>> + Send;
    /// The rules changed: does the open connection need replacing?
    fn needs_reconnect(&self, _rules: &RuleSnapshot) -> bool {
        false
    }
    /// Takes its credentials from the API-key pool when one is configured.
    const KEYED: bool = false;
    /// Use this key's credentials from now on (fields named as the pipeline
    /// keys they replace); say which field is missing.
    fn use_key(&mut self, _key: &PooledKey) -> Result<(), String> {
        Ok(())
    }
    /// After the last connection: stop helpers, persist positions.
    fn finish(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// A credential of a keyed source: from the API-key pool when one is
/// configured (a placeholder until the pool hands out a key; the pipeline's
/// value is not read), else the pipeline's `key`, which is then required.
pub fn credential(cx: &SourceContext, key: &str, value: Option<&SecretRef>) -> Result<Secret, SourceError> {
    match (&cx.key_pool, value) {
        (Some(_), _) => Ok(Secret::new(String::new())),
        (None, Some(r)) => r.resolve().map_err(|e| SourceError::Config(format!("source.{key}: {e}"))),
        (None, None) => Err(SourceError::Config(format!(
            "source.{key} is required (or [coordination.api_keys] to take credentials from a key pool)"
        ))),
    }
}

/// Keys seen recently, oldest forgotten first. A key is kept as its 64-bit
/// XXH3 hash (a collision inside a window of 10^7 keys: ~3·10^-6), in tables
/// sized once for the window (up to 2^20 keys): growing a table rehashes it
/// all at once, a latency spike of several ms at 7,168, 28,672 and 57,344
/// keys seen from outside at 10,000 posts/s.
#[derive(Debug)]
pub struct Dedup {
    set: HashSet<u64, std::hash::BuildHasherDefault<IdentityHash>>,
    order: VecDeque<u64>,
    cap: usize,
}

/// The keys are hashes already.
#[derive(Debug, Default)]
struct IdentityHash(u64);

impl std::hash::Hasher for IdentityHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl Dedup {
    pub fn new(cap: usize) -> Dedup {
        let cap = cap.max(1);
        let sized = cap.min(1 << 20);
        Dedup {
            set: HashSet::with_capacity_and_hasher(sized + 1, Default::default()),
            order: VecDeque::with_capacity(sized + 1),
            cap,
        }
    }
    /// True the first time a key is seen within the window.
    pub fn first(&mut self, key: &str) -> bool {
        let h = xxhash_rust::xxh3::xxh3_64(key.as_bytes());
        if self.set.contains(&h) {
            return false;
        }
        if self.order.len() >= self.cap
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.set.insert(h);
        self.order.push_back(h);
        true
    }
}

/// How a connection ended without failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Shutdown,
    /// The rules changed the request: reconnect now, not a failure.
    Reconnect,
}

/// A live source: a connector run by the driver.
#[derive(Debug)]
pub struct Live<C> {
    connector: C,
    settings: LiveSettings,
    batching: Batching,
    rules: watch::Receiver<Arc<RuleSnapshot>>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    stats: Arc<ConnectionStats>,
    /// Shown in logs and errors (`x_filtered_stream https://api.x.com`).
    label: String,
    /// Whether a worker waits for a batch (see `batch::Demand`).
    demand: Arc<crate::batch::Demand>,
    /// Credentials from the API-key pool (keyed connectors only).
    key_pool: Option<KeyPoolHandle>,
    /// The pool key in use (name, claim serial), and the serial of the last
    /// one refused.
    key: Option<(String, u64)>,
    refused: Option<u64>,
    /// Where the key's name is published (provenance).
    key_in_use: Arc<crate::key_pool::KeyInUse>,
}

/// What the driver carries from one connection to the next.
#[derive(Debug)]
struct State {
    batcher: Batcher,
    dedup: Dedup,
    summary: SourceSummary,
}

impl<C: Connector + std::fmt::Debug> Live<C> {
    pub fn new(connector: C, settings: LiveSettings, cx: &SourceContext, label: String) -> Live<C> {
        Live {
            connector,
            settings,
            batching: cx.batching,
            rules: cx.rules.clone(),
            health: cx.health.clone(),
            metrics: cx.metrics.clone(),
            stats: cx.connection_stats.clone(),
            label,
            demand: cx.demand.clone(),
            key_pool: if C::KEYED { cx.key_pool.clone() } else { None },
            key: None,
            refused: None,
            key_in_use: cx.key_in_use.clone(),
        }
    }

    /// Counters of the connection attempts.
    pub fn stats(&self) -> Arc<ConnectionStats> {
        self.stats.clone()
    }

    /// Connect and stream until shutdown, reconnecting by the backoff table.
    pub async fn drive(mut self, out: BatchTx, shutdown: CancellationToken) -> Result<SourceSummary, SourceError> {
        let name = self.connector.name();
        let mut st = State {
            batcher: Batcher::new(self.batching.max_records),
            dedup: Dedup::new(self.settings.dedup_window),
            summary: SourceSummary::default(),
        };
        let cx = LiveContext { rules: self.rules.clone(), health: self.health.clone(), shutdown: shutdown.clone() };
        let stopped = loop {
            if self.key_pool.is_some() && !self.take_key(&shutdown).await {
                break None;
            }
            let stopped = match self.connector.start(&cx).await {
                Err(f) if Backoff::exact().failed(&f, Instant::now()) == Decision::Stop => Some(f),
                Err(f) => {
                    tracing::warn!(source = name, error = %f, "start-up step failed; connecting anyway");
                    self.reconnect_loop(&mut st, &out, &shutdown).await
                }
                Ok(()) => self.reconnect_loop(&mut st, &out, &shutdown).await,
            };
            // A pool key refused: the pool marks it bad and hands out the next.
            match (stopped, &self.key_pool, self.key.take()) {
                (Some(f), Some(pool), Some((key, serial))) => {
                    tracing::warn!(source = name, api_key = %key, error = %f, "API key refused; asking the pool for the next");
                    self.health.set_unhealthy(format!("{name}: API key {key} refused: {f}"));
                    pool.refuse(&key, f.to_string());
                    self.refused = Some(serial);
                }
                (stopped, ..) => break stopped,
            }
        };
        if let Some(b) = st.batcher.flush() {
            let _ = out.send(b).await;
        }
        self.connector.finish().await;
        match stopped {
            Some(f) => {
                tracing::error!(source = name, error = %f, "credentials refused; the connection stops (fix them and restart)");
                self.health.set_unhealthy(format!("{name}: credentials refused: {f}"));
                Err(SourceError::Unauthorized(f.to_string()))
            }
            None => Ok(st.summary),
        }
    }

    /// Wait for a pool key the connector can use; false on shutdown.
    async fn take_key(&mut self, shutdown: &CancellationToken) -> bool {
        let name = self.connector.name();
        let Some(pool) = self.key_pool.as_mut() else { return true };
        loop {
            let Some(key) = pool.next(self.refused, shutdown).await else { return false };
            match self.connector.use_key(&key) {
                Ok(()) => {
                    tracing::info!(source = name, api_key = %key.name, "using an API key from the pool");
                    self.key = Some((key.name.clone(), key.serial));
                    self.key_in_use.set(&key.name);
                    return true;
                }
                Err(reason) => {
                    tracing::warn!(source = name, api_key = %key.name, reason = %reason, "API key unusable for this source");
                    pool.refuse(&key.name, reason);
                    self.refused = Some(key.serial);
                }
            }
        }
    }

    /// Returns the failure that stopped the source for good (401/403), if any.
    async fn reconnect_loop(&mut self, st: &mut State, out: &BatchTx, shutdown: &CancellationToken) -> Option<Failure> {
        let name = self.connector.name();
        let mut backoff = if self.settings.jitter { Backoff::default() } else { Backoff::exact() };
        loop {
            if shutdown.is_cancelled() {
                return None;
            }
            self.stats.connects.fetch_add(1, Relaxed);
            let (result, connected_at) = self.attempt(st, out, shutdown).await;
            if let Some(t) = connected_at {
                backoff.connected(t);
            }
            let failure = match result {
                Ok(Ended::Shutdown) => return None,
                Ok(Ended::Reconnect) => {
                    tracing::info!(source = name, "reconnecting (rules changed)");
                    continue;
                }
                Err(f) => f,
            };
            // What a connection read before it ended goes now, not after
            // the backoff (a batch may be held while the workers are busy).
            if let Some(b) = st.batcher.flush()
                && out.send(b).await.is_err()
            {
                return None;
            }
            failure.count_in(&self.stats);
            match backoff.failed(&failure, Instant::now()) {
                Decision::Stop => return Some(failure),
                Decision::RetryAfter(wait) => {
                    let wait = wait.mul_f64(self.settings.backoff_scale.clamp(0.0, 1.0));
                    tracing::warn!(
                        source = name,
                        class = failure.class(),
                        error = %failure,
                        retry_in_ms = wait.as_millis() as u64,
                        "connection ended; reconnecting"
                    );
                    tokio::select! {
                        () = shutdown.cancelled() => return None,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// One connection: connect, then stream until it ends. Returns when data
    /// started flowing, for the backoff's healthy-period reset.
    async fn attempt(
        &mut self,
        st: &mut State,
        out: &BatchTx,
        shutdown: &CancellationToken,
    ) -> (Result<Ended, Failure>, Option<Instant>) {
        let snapshot = self.rules.borrow_and_update().clone();
        let connect = self.connector.connect(&snapshot);
        let mut conn = tokio::select! {
            () = shutdown.cancelled() => return (Ok(Ended::Shutdown), None),
            r = connect => match r {
                Ok(c) => c,
                Err(f) => return (Err(f), None),
            },
        };
        let connected_at = Instant::now();
        self.health.set_healthy();
        self.stats.connected.store(1, Relaxed);
        tracing::info!(source = self.connector.name(), target = %self.label, "stream connected");
        let result = self.stream(&mut conn, st, out, shutdown, connected_at).await;
        self.stats.connected.store(0, Relaxed);
        (result, Some(connected_at))
    }

    /// Stream until the connection ends, the rules ask for a reconnect or
    /// the run stops; records go out in batches as workers ask for them.
    async fn stream(
        &mut self,
        conn: &mut C::Connection,
        st: &mut State,
        out: &BatchTx,
        shutdown: &CancellationToken,
        connected_at: Instant,
    ) -> Result<Ended, Failure> {
        let stall = self.settings.stall_timeout;
        let mut frames = Vec::new();
        let mut flush_at = Instant::now() + self.batching.max_wait;
        let mut stall_at = Instant::now() + stall;
        let mut reconnect_at: Option<Instant> = None;
        let mut rules_open = true;
        loop {
            let wake = reconnect_at.map_or(flush_at, |r| r.min(flush_at));
            tokio::select! {
                () = shutdown.cancelled() => {
                    conn.close().await;
                    return Ok(Ended::Shutdown);
                }
                () = tokio::time::sleep_until(wake) => {
                    if reconnect_at.is_some_and(|r| Instant::now() >= r) {
                        conn.close().await;
                        return Ok(Ended::Reconnect);
                    }
                    if !self.flush_now(st, out, &mut flush_at).await {
                        return Ok(Ended::Shutdown);
                    }
                }
                // A worker waits: what is held goes now (unless that worker
                // took a batch meanwhile: a stale wake-up keeps the hold).
                () = self.demand.worker_waits(), if st.batcher.pending() > 0 => {
                    if self.demand.wanted() && !self.flush_now(st, out, &mut flush_at).await {
                        return Ok(Ended::Shutdown);
                    }
                }
                changed = self.rules.changed(), if rules_open => {
                    match changed {
                        Ok(()) => reconnect_at = self.rules_changed(connected_at),
                        Err(_) => rules_open = false,
                    }
                }
                read = tokio::time::timeout_at(stall_at, conn.read(&mut frames)) => {
                    match read {
                        Err(_) => {
                            return Err(Failure::Network(format!(
                                "stalled: no data or keep-alive for {} s",
                                stall.as_secs()
                            )));
                        }
                        Ok(Err(f)) => return Err(f),
                        Ok(Ok(())) => {}
                    }
                    if let Some(end) = self.take_ready(conn, &mut frames, st, out, &mut stall_at).await {
                        return end;
                    }
                    if !self.send_or_hold(st, out, &mut flush_at).await {
                        return Ok(Ended::Shutdown);
                    }
                }
            }
        }
    }

    /// New rules arrived: when the connection must carry them, when to
    /// reconnect (not before `min_rule_reconnect` after connecting).
    fn rules_changed(&mut self, connected_at: Instant) -> Option<Instant> {
        let snapshot = self.rules.borrow_and_update().clone();
        if !self.connector.needs_reconnect(&snapshot) {
            return None;
        }
        tracing::info!(source = self.connector.name(), "rules changed; reconnecting with the new parameters");
        let earliest = connected_at + self.settings.min_rule_reconnect;
        Some(earliest.max(Instant::now() + Duration::from_millis(100)))
    }

    /// Send what is held now; false when the pipeline has gone away.
    async fn flush_now(&mut self, st: &mut State, out: &BatchTx, flush_at: &mut Instant) -> bool {
        if let Some(b) = st.batcher.flush()
            && out.send(b).await.is_err()
        {
            return false;
        }
        *flush_at = Instant::now() + self.batching.max_wait;
        true
    }

    /// Adaptive batching: what the wire had is in. While a worker waits,
    /// the records held go now; while every worker is busy, the batch may
    /// grow for `Demand::HOLD` (the `worker_waits` branch sends it as soon as
    /// one waits). False when the pipeline has gone away.
    async fn send_or_hold(&mut self, st: &mut State, out: &BatchTx, flush_at: &mut Instant) -> bool {
        if st.batcher.pending() == 0 {
            return true;
        }
        if self.demand.wanted() {
            return self.flush_now(st, out, flush_at).await;
        }
        *flush_at = (*flush_at).min(Instant::now() + crate::batch::Demand::HOLD);
        true
    }

    /// Take the frames read, then what the connection already holds.
    /// Coalescing: what the connection already holds (the source fell
    /// behind; the kernel has queued more) joins this batch without waiting.
    /// One record per batch at 30,000 posts/s was four thread hops per post:
    /// the source fell further behind. `Some` when the stream ends.
    async fn take_ready(
        &mut self,
        conn: &mut C::Connection,
        frames: &mut Vec<Frame>,
        st: &mut State,
        out: &BatchTx,
        stall_at: &mut Instant,
    ) -> Option<Result<Ended, Failure>> {
        let mut yielded = false;
        loop {
            *stall_at = Instant::now() + self.settings.stall_timeout;
            let arrived = conn.arrived().unwrap_or_else(std::time::Instant::now);
            if let Some(end) = self.take_frames(frames, st, arrived, out).await {
                return Some(end);
            }
            if st.batcher.pending() == 0 {
                return None;
            }
            match read_ready(conn, frames, &mut yielded).await {
                Ok(true) => {}
                Ok(false) => return None,
                Err(f) => {
                    if let Some(b) = st.batcher.flush() {
                        let _ = out.send(b).await;
                    }
                    return Some(Err(f));
                }
            }
        }
    }

    /// Batch the frames read (dropping redelivered records and counting
    /// oversized ones). `Some` when the stream ends.
    async fn take_frames(
        &mut self,
        frames: &mut Vec<Frame>,
        st: &mut State,
        arrived: std::time::Instant,
        out: &BatchTx,
    ) -> Option<Result<Ended, Failure>> {
        for frame in frames.drain(..) {
            match frame {
                Frame::KeepAlive => {}
                Frame::Oversized => {
                    let n = self.metrics.malformed.fetch_add(1, Relaxed);
                    if n < crate::telemetry::BAD_RECORDS_LOGGED {
                        tracing::warn!(source = self.connector.name(), "message longer than max_record_bytes skipped");
                    }
                }
                Frame::Record { bytes, dedup, checkpoint } => {
                    if let Some(key) = dedup
                        && !st.dedup.first(&key)
                    {
                        Metrics::add(&self.metrics.duplicates_dropped, 1);
                        tracing::debug!(source = self.connector.name(), key, "redelivered record dropped");
                        continue;
                    }
                    if !push(st, &bytes, checkpoint, arrived, out).await {
                        return Some(Ok(Ended::Shutdown));
                    }
                }
                Frame::End { record, failure } => {
                    if let Some(r) = record {
                        push(st, &r, None, arrived, out).await;
                    }
                    return Some(Err(failure));
                }
            }
        }
        None
    }
}

/// Read what the connection holds without waiting: true when frames came.
/// The HTTP client hands over one chunk per poll of its connection task: when
/// nothing is ready, let it run once (it may hold more, already read) and
/// look again. Without this a source that fell behind caught up one chunk per
/// task switch.
async fn read_ready<K: Connection>(conn: &mut K, frames: &mut Vec<Frame>, yielded: &mut bool) -> Result<bool, Failure> {
    use futures_util::FutureExt as _;
    if let Some(r) = conn.read(frames).now_or_never() {
        return r.map(|()| true);
    }
    if *yielded {
        return Ok(false);
    }
    *yielded = true;
    tokio::task::yield_now().await;
    match conn.read(frames).now_or_never() {
        Some(r) => r.map(|()| true),
        None => Ok(false),
    }
}

/// Add a record; false when the pipeline has gone away.
async fn push(
    st: &mut State,
    bytes: &[u8],
    checkpoint: Option<u64>,
    arrived: std::time::Instant,
    out: &BatchTx,
) -> bool {
    st.summary.records += 1;
    st.summary.bytes += bytes.len() as u64;
    if let Some(c) = checkpoint {
        st.batcher.checkpoint(c);
    }
    match st.batcher.push_at(bytes, st.summary.records, arrived) {
        Some(b) => out.send(b).await.is_ok(),
        None => true,
    }
}

impl<C: Connector + std::fmt::Debug> RunSource for Live<C> {
    fn name(&self) -> String {
        self.label.clone()
    }

    fn run(self: Box<Self>, out: BatchTx, shutdown: CancellationToken) -> SourceFuture {
        Box::pin(self.drive(out, shutdown))
    }
}

#[cfg(test)]
#[path = "live_tests.rs"]
mod tests;
