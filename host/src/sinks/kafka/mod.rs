//! The `kafka` sink: lossless delivery with librdkafka (`rdkafka`).
//!
//! * Idempotent producer, `acks=all`, key = post id, compression (lz4 by
//!   default), headers `traptor-type`, `traptor-id`, `traptor-rules` (matched
//!   rule ids); any librdkafka property passes through, secret ones from
//!   env/file.
//! * A record counts as delivered only on its delivery report. librdkafka
//!   retries within `delivery_timeout_ms`; a record that still fails is not
//!   dropped: it goes to the spool.
//! * In-flight bytes are bounded (`max_inflight_bytes`): the sink stops taking
//!   batches until reports free room (backpressure to the workers and source).
//! * Spool: when in-flight bytes are full and no delivery report has come for
//!   `spill_after` (the broker hangs or is away), or a record fails, every
//!   following record is appended to the on-disk spool (so order holds) until
//!   the spool has been replayed; replay keeps a window of spooled records in
//!   flight and probes once a second while the broker fails. A full spool
//!   follows its overflow policy, counted and logged. The spool survives a
//!   restart: it is replayed first.
//! * Records sent directly are not copied: librdkafka holds the only copy
//!   and hands it back with a failed delivery report, which is then spooled.
//! * A batch is confirmed (and with it the sources' checkpoints: a Kafka
//!   source's offsets, a Jetstream cursor) only when every record of it and
//!   of all earlier batches is delivered or safely spooled.
//!
//! Where in this folder: `mod.rs` the configuration, the options and the
//! sink's loop ([`deliver`]); `mode.rs` the modes and their transitions
//! (pure, unit-tested); `delivery.rs` the state: taking batches, delivery
//! reports, keeping what failed; `replay.rs` the spool's replay window;
//! `producer.rs` the librdkafka producer, its context and headers.

mod delivery;
mod mode;
mod producer;
mod replay;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use self::delivery::State;
use self::mode::{PhaseEvent, Step};
pub use self::producer::{Producer, QuietContext, Reports, SinkContext, producer};
use super::{
    BatchRx, DeadLetters, LineSink, RunSink, Sink, SinkComponent, SinkError, SinkFuture, SinkRun, SinkSummary,
};
use crate::batch::Reorder;
use crate::component::{BaseDir, Problems};
use crate::rules::Collector;
use crate::secret::SecretRef;
use crate::spool::{Fsync, Overflow, Spool};
use crate::telemetry::Metrics;

/// `[sink]` with `type = "kafka"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// `host:port,host:port`.
    pub brokers: String,
    /// The topic posts are written to.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// none, gzip, snappy, lz4 (default), zstd.
    #[serde(default = "default_compression")]
    pub compression: String,
    /// Bytes waiting for delivery reports before the sink stops taking input.
    #[serde(default = "default_inflight")]
    pub max_inflight_bytes: u64,
    /// librdkafka's retry window per record before it counts as failed.
    #[serde(default = "default_delivery_timeout_ms")]
    pub delivery_timeout_ms: u64,
    /// When the input ends with records still spooled (broker away), keep
    /// trying this long before leaving them for the next start.
    #[serde(default = "default_drain_secs")]
    pub drain_timeout_secs: u64,
    /// With a spool: when in-flight bytes are full and no delivery report
    /// has come for this long, the broker counts as stalled and input
    /// spills to disk; before that, input just waits (backpressure).
    #[serde(default = "default_spill_after_ms")]
    pub spill_after_ms: u64,
    /// Any librdkafka property, e.g. `"security.protocol" = "SASL_SSL"`.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Properties whose values are secrets: `"sasl.password" = { env = "…" }`.
    #[serde(default)]
    pub secret_properties: BTreeMap<String, SecretRef>,
    /// Where records wait when the broker is slow or down.
    #[serde(default)]
    pub spool: Option<SpoolConfig>,
    /// Records the broker refuses for good (too large, invalid) go to this
    /// topic, with a `traptor-refused` header saying why (else to
    /// `[dead_letter]`'s file, else they are counted and logged).
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
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
    /// Size of one segment file.
    #[serde(default = "default_segment")]
    pub segment_bytes: u64,
    /// `batch` (default), `always` or `never`.
    #[serde(default)]
    pub fsync: Fsync,
    /// What a full spool does: `drop_newest` (counted and logged) or `block`
    /// (pause the input; nothing lost).
    #[serde(default)]
    pub overflow: Overflow,
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

impl SinkComponent for KafkaSinkConfig {
    fn check(&self, p: &mut Problems<'_>) {
        if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&self.compression.as_str()) {
            p.add("compression", format!("{:?}: expected none, gzip, snappy, lz4 or zstd", self.compression));
        }
        if self.brokers.trim().is_empty() {
            p.add("brokers", "must name at least one broker");
        }
        p.range("max_inflight_bytes", self.max_inflight_bytes, 1 << 10, 16 << 30);
        // librdkafka's delivery.timeout.ms is an int32 of milliseconds.
        p.range("delivery_timeout_ms", self.delivery_timeout_ms, 1, i32::MAX as u64);
        p.range("drain_timeout_secs", self.drain_timeout_secs, 0, 86_400);
        p.range("spill_after_ms", self.spill_after_ms, 1, 3_600_000);
        if let Some(t) = &self.dead_letter_topic
            && (t.is_empty() || *t == self.topic)
        {
            p.add("dead_letter_topic", "must name a topic other than `topic`");
        }
        if let Some(s) = &self.spool {
            p.range("spool.segment_bytes", s.segment_bytes, 4 << 10, 4 << 30);
            p.range("spool.max_bytes", s.max_bytes, 4 << 10, 1 << 50);
        }
    }

    fn files(&self) -> Vec<(&'static str, &std::path::Path)> {
        self.spool.iter().map(|s| ("spool.dir", s.dir.as_path())).collect()
    }

    fn resolve_paths(&mut self, base: &BaseDir) {
        if let Some(s) = &mut self.spool {
            base.fix(&mut s.dir);
        }
        for s in self.secret_properties.values_mut() {
            base.fix_secret(s);
        }
    }

    fn build(&self, identity: Collector) -> Result<Sink, SinkError> {
        let mut properties: Vec<(String, String)> =
            self.properties.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (k, s) in &self.secret_properties {
            let v = s.resolve().map_err(|e| SinkError::Config {
                what: format!("sink.secret_properties.{k}"),
                reason: e.to_string(),
            })?;
            properties.push((k.clone(), v.expose().to_owned()));
        }
        Ok(Sink::new(KafkaOptions {
            brokers: self.brokers.clone(),
            topic: self.topic.clone(),
            compression: self.compression.clone(),
            max_inflight_bytes: self.max_inflight_bytes,
            delivery_timeout: Duration::from_millis(self.delivery_timeout_ms),
            drain_timeout: Duration::from_secs(self.drain_timeout_secs),
            spill_after: Duration::from_millis(self.spill_after_ms),
            properties,
            spool: self.spool.as_ref().map(|s| SpoolOptions {
                dir: s.dir.clone(),
                max_bytes: s.max_bytes,
                segment_bytes: s.segment_bytes,
                fsync: s.fsync,
                overflow: s.overflow,
            }),
            traptor_type: identity.rule_type.as_str().to_owned(),
            traptor_id: identity.id,
            dead_letter_topic: self.dead_letter_topic.clone(),
        }))
    }
}

impl RunSink for KafkaOptions {
    fn name(&self) -> String {
        format!("kafka {} topic {}", self.brokers, self.topic)
    }

    /// librdkafka accepts the settings (a client is made; no broker needed).
    fn check_environment(&self) -> Result<(), SinkError> {
        producer(self, Default::default()).map(drop)
    }

    fn run(self: Box<Self>, input: BatchRx, run: SinkRun) -> SinkFuture {
        Box::pin(async move {
            let stats = Arc::new(KafkaStats::default());
            let SinkRun { metrics, dead_letters, confirmed, shutdown } = run;
            let d = Delivery { metrics, confirmed, stats: stats.clone(), dead: dead_letters, shutdown };
            let r = deliver(*self, input, d).await;
            tracing::info!(
                delivered = stats.delivered.load(Ordering::Relaxed),
                spooled = stats.spooled.load(Ordering::Relaxed),
                replayed = stats.replayed.load(Ordering::Relaxed),
                dropped_spool_full = stats.spool_overflow_dropped.load(Ordering::Relaxed),
                lost = stats.lost.load(Ordering::Relaxed),
                "kafka sink finished"
            );
            r
        })
    }

    fn into_dead_letters(self: Box<Self>) -> Result<Box<dyn LineSink + Send>, SinkError> {
        Err(SinkError::Config {
            what: "dead_letter.type".into(),
            reason: "a kafka dead-letter topic is not supported yet; use a file".into(),
        })
    }
}

/// Settings of the sink.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    pub brokers: String,
    pub topic: String,
    pub compression: String,
    pub max_inflight_bytes: u64,
    pub delivery_timeout: Duration,
    /// How long to keep trying to empty the spool once the input has ended.
    pub drain_timeout: Duration,
    /// In-flight full and no delivery report for this long: spill to the spool.
    pub spill_after: Duration,
    /// librdkafka properties, secrets already resolved (never logged).
    pub properties: Vec<(String, String)>,
    pub spool: Option<SpoolOptions>,
    /// `traptor-type` / `traptor-id` headers.
    pub traptor_type: String,
    pub traptor_id: u32,
    /// Where refused records go.
    pub dead_letter_topic: Option<String>,
}

/// `[sink.spool]`.
#[derive(Debug, Clone)]
pub struct SpoolOptions {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub segment_bytes: u64,
    pub fsync: Fsync,
    pub overflow: Overflow,
}

/// Counters of the Kafka sink.
#[derive(Debug, Default)]
pub struct KafkaStats {
    pub delivered: AtomicU64,
    pub failed_then_spooled: AtomicU64,
    pub spooled: AtomicU64,
    pub replayed: AtomicU64,
    pub spool_overflow_dropped: AtomicU64,
    pub replay_failures: AtomicU64,
    pub spills: AtomicU64,
    /// Times input was paused by a full spool (policy `block`).
    pub blocks: AtomicU64,
    /// Failed records the producer did not hand back (never expected: an
    /// old producer is kept until its reports are in).
    pub lost: AtomicU64,
}

/// What [`deliver`] shares with the pipeline (handed to the sink's state).
// DRAFT-CHECK: `input` stays an argument of its own (the stream; this is the
// context); fold it in here if `deliver(o, d)` is preferred.
#[derive(Debug)]
pub struct Delivery {
    pub metrics: Arc<Metrics>,
    /// Raised as batches are delivered or safely spooled, in order: every
    /// batch whose `seq` is below it is done ([`SinkRun::confirmed`]).
    pub confirmed: Arc<AtomicU64>,
    pub stats: Arc<KafkaStats>,
    /// Dead letters (small and rare, written inline).
    pub dead: DeadLetters,
    /// Once cancelled, a full spool (policy `block`) takes what the pipeline
    /// still holds, past its cap, so the drain can finish.
    pub shutdown: CancellationToken,
}

/// Runs the sink until its input closes and everything is delivered or spooled.
pub async fn deliver(o: KafkaOptions, input: BatchRx, d: Delivery) -> Result<SinkSummary, SinkError> {
    let reports = Arc::new(Reports::default());
    let mut st = State::new(&o, reports.clone(), d)?;
    let mut summary = SinkSummary::default();
    let mut reorder = Reorder::default();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        // DRAFT-CHECK: one clock read per round, shared by the drain step and
        // the pause log (before: read only once the input had ended, and when
        // pausing); the decisions are the same.
        let now = tokio::time::Instant::now();
        // When the input has ended with records still spooled, keep trying the
        // broker for a while before leaving them for the next start.
        let in_flight = !(st.direct.is_empty() && st.replay.is_empty()) || st.dead_outstanding > 0;
        let event = PhaseEvent::Step { now, drain_timeout: o.drain_timeout, in_flight, spooling: st.spooling() };
        let (phase, step) = st.mode.phase.on(event);
        st.mode.phase = phase;
        match step {
            Step::Continue => {}
            Step::Finish => break,
            // Give up waiting: what the producer still holds comes back as
            // failures and goes to the spool for the next start.
            Step::Purge => st.purge_producer(),
        }
        // In-flight bytes bound the input (backpressure), except that with a
        // spool, a stalled broker or a non-empty spool sends it to disk.
        let blocked = st.blocked();
        st.note_blocked(blocked, now);
        let room = st.mode.reads_input(st.inflight_bytes < o.max_inflight_bytes, st.spooling(), st.stalled());
        tokio::select! {
            batch = input.recv(), if room => {
                match batch {
                    Ok(batch) => {
                        for b in reorder.push(batch) {
                            st.take(b, &mut summary)?;
                        }
                    }
                    Err(_) => {
                        st.mode.phase = st.mode.phase.on(PhaseEvent::InputClosed).0;
                        for b in reorder.drain() {
                            st.take(b, &mut summary)?;
                        }
                    }
                }
            }
            () = reports.notify.notified() => st.apply_reports()?,
            _ = tick.tick() => st.tick()?,
        }
    }
    if st.spooling() {
        tracing::warn!(
            records = st.spool.as_ref().map_or(0, Spool::len),
            "stopping with records in the spool; they are sent on the next start"
        );
    }
    st.dead.finish()?;
    Ok(summary)
}
