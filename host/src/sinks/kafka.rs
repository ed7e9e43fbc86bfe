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

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::collections::VecDeque;

use rdkafka::ClientConfig;
use rdkafka::message::{Header, Headers as _, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};

use serde::Deserialize;

use super::spool::{Fsync, Overflow, Pos, Spool, SpoolError, SpoolRecord, spooled_size};
use super::{BatchRx, LineSink, RunSink, Sink, SinkComponent, SinkError, SinkFuture, SinkRun, SinkSummary};
use crate::batch::{OutBatch, Reorder};
use crate::component::{BaseDir, Problems};
use crate::rules::Collector;
use crate::secret::SecretRef;
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
            let dead = run.dead_letters;
            let r = deliver(*self, input, run.metrics, run.confirmed, stats.clone(), dead, run.shutdown).await;
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

/// librdkafka's own log and error callbacks, made quiet: an outage produces
/// one warning per kind of error every 30 s instead of several lines a second.
#[derive(Debug, Default)]
pub struct QuietContext {
    last: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

impl QuietContext {
    fn first_in_a_while(&self, key: &str) -> bool {
        let Ok(mut m) = self.last.lock() else { return true };
        let now = std::time::Instant::now();
        match m.get(key) {
            Some(t) if now.duration_since(*t) < Duration::from_secs(30) => false,
            _ => {
                m.insert(key.to_owned(), now);
                true
            }
        }
    }
}

impl rdkafka::ClientContext for QuietContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error | L::Warning => {
                if self.first_in_a_while(fac) {
                    tracing::warn!(facility = fac, "librdkafka: {message}");
                }
            }
            _ => tracing::debug!(facility = fac, "librdkafka: {message}"),
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if self.first_in_a_while(&format!("{error:?}")) {
            tracing::warn!(error = %error, "kafka client: {reason} (repeats are suppressed for 30 s)");
        }
    }
}

/// Delivery reports waiting for the sink's loop: (token, outcome). librdkafka's
/// polling thread queues a whole poll's worth and wakes the loop once, rather
/// than once per record.
#[derive(Debug, Default)]
pub struct Reports {
    queue: std::sync::Mutex<Vec<(usize, DirectDelivery)>>,
    notify: tokio::sync::Notify,
}

impl Reports {
    fn take(&self) -> Vec<(usize, DirectDelivery)> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// The producer's context: quiet logs, and delivery reports into [`Reports`]
/// (shared by a replaced producer and its successor).
#[derive(Debug, Default)]
pub struct SinkContext {
    quiet: QuietContext,
    reports: Arc<Reports>,
}

impl rdkafka::ClientContext for SinkContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.quiet.log(level, fac, message);
    }
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.quiet.error(error, reason);
    }
}

impl ProducerContext for SinkContext {
    /// Which record: a direct send or a replayed one (`REPLAY_TOKEN` set).
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, token: usize) {
        let outcome = match result {
            Ok(_) => Ok(()),
            Err((e, m)) => Err((failed(e), Some(returned(m)))),
        };
        self.reports.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((token, outcome));
        self.reports.notify.notify_one();
    }
}

/// The sink's producer: librdkafka polled on its own thread, reports queued.
pub type Producer = ThreadedProducer<SinkContext>;

/// Build the producer (also used by `validate`); its reports go to `reports`.
pub fn producer(o: &KafkaOptions, reports: Arc<Reports>) -> Result<Producer, SinkError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &o.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", &o.compression)
        .set("message.timeout.ms", o.delivery_timeout.as_millis().to_string())
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", (o.max_inflight_bytes / 1024 * 2).max(1024).to_string());
    for (k, v) in &o.properties {
        c.set(k, v);
    }
    c.create_with_context(SinkContext { quiet: QuietContext::default(), reports })
        .map_err(|e| SinkError::Config { what: format!("kafka producer for {}", o.brokers), reason: e.to_string() })
}

/// Headers of a record as the spool keeps them.
fn headers(o: &KafkaOptions, rules: &str) -> Vec<(String, Vec<u8>)> {
    let mut h = vec![
        ("traptor-type".to_owned(), o.traptor_type.as_bytes().to_vec()),
        ("traptor-id".to_owned(), o.traptor_id.to_string().into_bytes()),
    ];
    if !rules.is_empty() {
        h.push(("traptor-rules".to_owned(), rules.as_bytes().to_vec()));
    }
    h
}

/// Headers of a record sent directly (no intermediate copies).
/// `id` is `o.traptor_id` as text, made once per batch rather than per record.
fn direct_headers(o: &KafkaOptions, id: &str, rules: &str) -> OwnedHeaders {
    let h = OwnedHeaders::new_with_capacity(3)
        .insert(Header { key: "traptor-type", value: Some(o.traptor_type.as_bytes()) })
        .insert(Header { key: "traptor-id", value: Some(id.as_bytes()) });
    if rules.is_empty() { h } else { h.insert(Header { key: "traptor-rules", value: Some(rules.as_bytes()) }) }
}

/// A record the producer handed back with its failed report, as the spool keeps it.
fn returned<M: Message>(m: &M) -> SpoolRecord {
    SpoolRecord {
        key: m.key().unwrap_or_default().to_vec(),
        value: m.payload().unwrap_or_default().to_vec(),
        headers: m
            .headers()
            .map(|h| h.iter().map(|x| (x.key.to_owned(), x.value.unwrap_or_default().to_vec())).collect())
            .unwrap_or_default(),
    }
}

fn owned_headers(h: &[(String, Vec<u8>)]) -> OwnedHeaders {
    h.iter().fold(OwnedHeaders::new_with_capacity(h.len()), |acc, (k, v)| acc.insert(Header { key: k, value: Some(v) }))
}

/// A failed delivery: the message, and whether the producer itself is spent
/// (fenced or out of sequence: only a new producer id can send again).
#[derive(Debug, Clone)]
struct Failed {
    message: String,
    producer_spent: bool,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn failed(e: &rdkafka::error::KafkaError) -> Failed {
    use rdkafka::types::RDKafkaErrorCode as C;
    let producer_spent = matches!(
        e.rdkafka_error_code(),
        Some(
            C::ProducerFenced
                | C::InvalidProducerEpoch
                | C::UnknownProducerId
                | C::OutOfOrderSequenceNumber
                | C::InvalidProducerIdMapping
                | C::Fatal
        )
    );
    Failed { message: e.to_string(), producer_spent }
}

type Delivery = Result<(), Failed>;
/// A direct send's report: the failure comes with the record handed back.
type DirectDelivery = Result<(), (Failed, Option<SpoolRecord>)>;

/// A replayed record in flight, in spool order.
#[derive(Debug)]
struct ReplayEntry {
    /// Position after it, spooled size, value bytes.
    pos: Pos,
    size: u64,
    bytes: u64,
    /// Delivered in an earlier window: acknowledged without sending.
    already: bool,
    /// Its report, once in.
    result: Option<Delivery>,
}

/// Tokens of replayed records carry this bit; direct sends do not.
const REPLAY_TOKEN: usize = 1 << (usize::BITS - 1);

/// Replayed records in flight at most (also bounded by `max_inflight_bytes`).
const REPLAY_WINDOW: usize = 20_000;
/// Records read from the spool per step.
const REPLAY_CHUNK: usize = 1_000;

/// Hand one record to the producer (which copies it); its report comes back
/// through [`Reports`] under `token`. `Err`: refused at once (e.g. the
/// producer's queue is full); no report follows.
fn send_raw(
    producer: &Producer,
    topic: &str,
    key: &[u8],
    value: &[u8],
    headers: OwnedHeaders,
    token: usize,
) -> Result<(), Failed> {
    let mut r: BaseRecord<'_, [u8], [u8], usize> =
        BaseRecord::with_opaque_to(topic, token).payload(value).headers(headers);
    if !key.is_empty() {
        r = r.key(key);
    }
    producer.send(r).map_err(|(e, _)| failed(&e))
}

/// A batch handed to the producer: records not yet delivered or safely
/// spooled, and (records, read time) for the end-to-end
/// latency, observed when the last record is through.
type OpenBatch = (usize, Option<(u64, std::time::Instant)>);

/// The sink's state between select rounds.
struct State<'a> {
    o: &'a KafkaOptions,
    producer: Producer,
    /// Replaced producers, kept until their outstanding reports are in
    /// (dropping one early would lose the records it holds).
    retired: Vec<Producer>,
    spool: Option<Spool>,
    reports: Arc<Reports>,
    /// Direct sends awaiting their report, by token − `direct_base`:
    /// (batch seq, value bytes, sent at); `None` once reported (front trimmed).
    direct: VecDeque<Option<(u64, u64, std::time::Instant)>>,
    direct_base: usize,
    /// Replayed records in flight, in spool order, by token − `replay_base`.
    replay: VecDeque<ReplayEntry>,
    replay_base: usize,
    /// The input has ended and the drain gave up: no more replay.
    purged: bool,
    inflight_bytes: u64,
    /// Per batch: records not yet delivered or safely spooled,
    /// and (records, read time) for the end-to-end latency.
    open: BTreeMap<u64, OpenBatch>,
    stats: Arc<KafkaStats>,
    metrics: Arc<Metrics>,
    confirmed: Arc<AtomicU64>,
    /// The last replay attempt failed: probe with one record, after a pause.
    replay_failing: bool,
    next_replay: tokio::time::Instant,
    /// A record of the replay window in flight failed; the rest still report.
    replay_broken: bool,
    /// Where the next replay read starts (`None`: the spool's head).
    replay_cursor: Option<Pos>,
    /// Replayed records delivered after an earlier one of their window
    /// failed: acknowledged without sending when the replay reaches them
    /// again, so a failed window does not duplicate what did get through.
    delivered_ahead: std::collections::BTreeSet<Pos>,
    /// When the last delivery report arrived (stall detection).
    last_progress: tokio::time::Instant,
    /// Input paused by a full spool (policy `block`) since.
    blocked_since: Option<tokio::time::Instant>,
    /// Once shutting down, a full spool (policy `block`) takes what the
    /// pipeline still holds, past its cap, so the drain can finish.
    shutdown: tokio_util::sync::CancellationToken,
    /// Dead letters (small and rare, written inline).
    dead: super::DeadLetters,
}

impl State<'_> {
    fn spool_err(e: SpoolError) -> SinkError {
        SinkError::Write { target: "spool".into(), source: std::io::Error::other(e.to_string()) }
    }

    fn spooling(&self) -> bool {
        self.spool.as_ref().is_some_and(|s| !s.is_empty())
    }

    /// In-flight bytes are full and no report has come for `spill_after`:
    /// with a spool, input goes to disk rather than waiting in memory.
    /// The spool is full and its policy is `block`: take no input.
    fn blocked(&self) -> bool {
        !self.shutdown.is_cancelled()
            && self.o.spool.as_ref().is_some_and(|o| o.overflow == Overflow::Block)
            && self.spool.as_ref().is_some_and(Spool::is_full)
    }

    fn stalled(&self) -> bool {
        self.spool.is_some()
            && self.inflight_bytes >= self.o.max_inflight_bytes
            && self.last_progress.elapsed() >= self.o.spill_after
    }

    /// After a failure: an idempotent producer can end in a fatal state (e.g.
    /// fenced after an epoch bump on a broker that came back); it never sends
    /// again, so it is replaced by a fresh one (new producer id).
    fn recover_if_fatal(&mut self, f: &Failed) -> Result<(), SinkError> {
        use rdkafka::producer::Producer as _;
        let fatal = self.producer.client().fatal_error();
        if f.producer_spent || fatal.is_some() {
            tracing::warn!(error = %f, ?fatal, "kafka producer can no longer send; creating a new one");
            let old = std::mem::replace(&mut self.producer, producer(self.o, self.reports.clone())?);
            // What it still holds comes back as failed reports (and is spooled).
            old.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
            self.retired.push(old);
        }
        Ok(())
    }

    /// A direct send failed: keep the record the producer handed back.
    fn direct_failed(&mut self, e: &Failed, rec: Option<SpoolRecord>) -> Result<(), SinkError> {
        if self.stats.failed_then_spooled.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(error = %e, "delivery failed; spooling to disk until the broker is back");
        }
        match rec {
            Some(rec) => self.keep(rec, &e.message)?,
            None => {
                if self.stats.lost.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::error!(error = %e, "a failed record was not handed back by the producer; lost (counted)");
                }
            }
        }
        self.recover_if_fatal(e)?;
        self.replay_failing = true;
        self.next_replay = tokio::time::Instant::now() + Duration::from_secs(1);
        Ok(())
    }

    fn delivered(&self, bytes: u64) {
        Metrics::add(&self.metrics.records_out, 1);
        Metrics::add(&self.metrics.bytes_out, bytes);
        self.stats.delivered.fetch_add(1, Ordering::Relaxed);
    }

    /// Keep a record that could not go out now. Never silently dropped: spooled,
    /// or counted and logged by the overflow policy; without a spool, an error.
    fn keep(&mut self, rec: SpoolRecord, why: &str) -> Result<(), SinkError> {
        let Some(s) = self.spool.as_mut() else {
            return Err(SinkError::Write {
                target: format!("kafka topic {}", self.o.topic),
                source: std::io::Error::other(format!("delivery failed and no [sink.spool] is configured: {why}")),
            });
        };
        let appended = match self.o.spool.as_ref().map(|o| o.overflow) {
            Some(Overflow::Block) => s.append_past_cap(std::slice::from_ref(&rec)),
            _ => s.append(std::slice::from_ref(&rec)),
        };
        match appended {
            Ok(()) => {
                self.stats.spooled.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(SpoolError::Full { max_bytes }) => {
                let n = self.stats.spool_overflow_dropped.fetch_add(1, Ordering::Relaxed);
                if n == 0 || (n + 1).is_power_of_two() {
                    tracing::error!(
                        max_bytes,
                        dropped = n + 1,
                        "spool full: records dropped (overflow policy drop_newest)"
                    );
                }
                Ok(())
            }
            Err(e) => Err(Self::spool_err(e)),
        }
    }

    /// [`State::keep`] for many records, written (and synced) as one append.
    fn keep_all(&mut self, recs: Vec<SpoolRecord>) -> Result<(), SinkError> {
        if recs.is_empty() {
            return Ok(());
        }
        if let Some(s) = self.spool.as_mut() {
            let appended = match self.o.spool.as_ref().map(|o| o.overflow) {
                Some(Overflow::Block) => s.append_past_cap(&recs),
                _ => s.append(&recs),
            };
            match appended {
                Ok(()) => {
                    self.stats.spooled.fetch_add(recs.len() as u64, Ordering::Relaxed);
                    return Ok(());
                }
                Err(SpoolError::Full { .. }) => {} // one by one: as many as fit
                Err(e) => return Err(Self::spool_err(e)),
            }
        }
        for rec in recs {
            self.keep(rec, "spool not yet replayed")?;
        }
        Ok(())
    }

    fn batch_done_one(&mut self, seq: u64) {
        if let Some(e) = self.open.get_mut(&seq) {
            e.0 = e.0.saturating_sub(1);
            if e.0 == 0
                && let Some((n, t)) = e.1.take()
            {
                self.metrics.end_to_end.observe_n(t.elapsed(), n);
            }
        }
        while let Some((&seq, &(left, _))) = self.open.first_key_value() {
            if left > 0 {
                break;
            }
            self.confirmed.fetch_max(seq + 1, Ordering::Release);
            self.open.pop_first();
        }
    }

    /// Send (or spool, to keep order while the spool is not empty) a batch.
    fn take(&mut self, b: OutBatch, summary: &mut SinkSummary) -> Result<(), SinkError> {
        let seq = b.seq;
        for line in b.iter_dead() {
            self.dead.write_line(line)?;
            Metrics::add(&self.metrics.dead_letters_out, 1);
        }
        if b.dead_len() > 0 {
            self.dead.idle()?;
        }
        let mut spooling = self.spooling();
        let mut outstanding = 0;
        let mut spooled = Vec::new();
        let o = self.o;
        let id = o.traptor_id.to_string();
        for (value, key, rules) in b.iter_full() {
            let spool_record =
                || SpoolRecord { key: key.as_bytes().to_vec(), value: value.to_vec(), headers: headers(o, rules) };
            summary.records += 1;
            summary.bytes += value.len() as u64;
            if !spooling && self.stalled() {
                // The broker is slow or away: spill to disk instead of memory.
                // These records were never handed to the producer, so
                // replaying them later cannot duplicate anything.
                spooling = true;
                if self.stats.spills.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(
                        inflight_bytes = self.inflight_bytes,
                        "broker slow or away: spilling to the disk spool (replayed in order when it catches up)"
                    );
                }
            }
            if spooling {
                spooled.push(spool_record());
                continue;
            }
            let token = self.direct_base + self.direct.len();
            match send_raw(&self.producer, &o.topic, key.as_bytes(), value, direct_headers(o, &id, rules), token) {
                Ok(()) => {
                    let bytes = value.len() as u64;
                    self.inflight_bytes += bytes;
                    outstanding += 1;
                    self.direct.push_back(Some((seq, bytes, std::time::Instant::now())));
                }
                Err(e) => {
                    // Refused at once: spooled, and the rest of the batch
                    // follows it there (order).
                    self.direct_failed(&e, Some(spool_record()))?;
                    spooling = true;
                }
            }
        }
        let latency = b.read_at.map(|t| (b.len() as u64, t));
        if outstanding == 0
            && let Some((n, t)) = latency
        {
            self.metrics.end_to_end.observe_n(t.elapsed(), n);
        }
        self.open.insert(seq, (outstanding, latency.filter(|_| outstanding > 0)));
        self.keep_all(spooled)?;
        self.batch_done_one(u64::MAX); // confirm batches that needed nothing
        Ok(())
    }

    /// Keep the replay window full: records from the spool, in order, up to
    /// `REPLAY_WINDOW` and the in-flight bound. After a failure, one probe
    /// record at a time, once a second, until the broker answers.
    fn fill_replay(&mut self) -> Result<(), SinkError> {
        if !self.spooling() {
            return Ok(());
        }
        if self.replay_failing {
            if !self.replay.is_empty() || tokio::time::Instant::now() < self.next_replay {
                return Ok(());
            }
            return self.push_replay(1).map(|_| ());
        }
        while self.replay.len() < REPLAY_WINDOW && self.inflight_bytes < self.o.max_inflight_bytes {
            if self.push_replay(REPLAY_CHUNK)? == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Send up to `n` spooled records after the replay cursor.
    fn push_replay(&mut self, n: usize) -> Result<usize, SinkError> {
        let Some(s) = self.spool.as_mut() else { return Ok(0) };
        let from = self.replay_cursor.unwrap_or_else(|| s.head());
        let recs = s.peek_from(from, n).map_err(Self::spool_err)?;
        if self.stats.replayed.load(Ordering::Relaxed) == 0 && self.replay.is_empty() && !self.replay_failing {
            tracing::info!(records = s.len(), "replaying the spool");
        }
        let count = recs.len();
        for (pos, rec) in recs {
            self.replay_cursor = Some(pos);
            let size = spooled_size(&rec);
            let bytes = rec.value.len() as u64;
            if self.delivered_ahead.remove(&pos) {
                self.replay.push_back(ReplayEntry { pos, size, bytes, already: true, result: Some(Ok(())) });
                continue;
            }
            self.inflight_bytes += bytes;
            let token = REPLAY_TOKEN | (self.replay_base + self.replay.len());
            let sent =
                send_raw(&self.producer, &self.o.topic, &rec.key, &rec.value, owned_headers(&rec.headers), token);
            // Refused at once: it resolves now, as a failure (no report follows).
            let result = sent.err().map(Err);
            self.replay.push_back(ReplayEntry { pos, size, bytes, already: false, result });
        }
        Ok(count)
    }

    /// Apply the delivery reports that have come in.
    fn apply_reports(&mut self) -> Result<(), SinkError> {
        for (token, outcome) in self.reports.take() {
            if token & REPLAY_TOKEN != 0 {
                let i = (token & !REPLAY_TOKEN).wrapping_sub(self.replay_base);
                if let Some(e) = self.replay.get_mut(i) {
                    e.result = Some(outcome.map_err(|(f, _)| f));
                }
                continue;
            }
            let i = token.wrapping_sub(self.direct_base);
            let Some((seq, bytes, sent_at)) = self.direct.get_mut(i).and_then(Option::take) else {
                continue;
            };
            while self.direct.front().is_some_and(Option::is_none) {
                self.direct.pop_front();
                self.direct_base += 1;
            }
            self.inflight_bytes = self.inflight_bytes.saturating_sub(bytes);
            match outcome {
                Ok(()) => {
                    self.last_progress = tokio::time::Instant::now();
                    self.metrics.kafka_delivery.observe_n(sent_at.elapsed(), 1);
                    self.delivered(bytes);
                }
                Err((e, rec)) => self.direct_failed(&e, rec)?,
            }
            self.batch_done_one(seq);
        }
        self.replay_reported()?;
        if self.direct.is_empty() && self.replay.is_empty() {
            self.retired.clear();
        }
        Ok(())
    }

    /// Acknowledge replayed records whose reports are in, in spool order.
    fn replay_reported(&mut self) -> Result<(), SinkError> {
        while self.replay.front().is_some_and(|e| e.result.is_some()) {
            let Some(e) = self.replay.pop_front() else { break };
            self.replay_base += 1;
            self.replay_done(e)?;
        }
        Ok(())
    }

    /// One replayed record's report, in spool order.
    fn replay_done(&mut self, e: ReplayEntry) -> Result<(), SinkError> {
        let ReplayEntry { pos, size, bytes, already, result } = e;
        if !already {
            self.inflight_bytes = self.inflight_bytes.saturating_sub(bytes);
        }
        match result.unwrap_or(Ok(())) {
            Ok(()) if self.replay_broken => {
                // An earlier record of this window failed, so the head
                // cannot move past it; remember this one as sent.
                if !already {
                    self.delivered(bytes);
                    self.last_progress = tokio::time::Instant::now();
                }
                self.delivered_ahead.insert(pos);
            }
            Ok(()) => {
                self.replay_failing = false;
                if !already {
                    self.delivered(bytes);
                    self.last_progress = tokio::time::Instant::now();
                }
                self.stats.replayed.fetch_add(1, Ordering::Relaxed);
                if let Some(s) = self.spool.as_mut() {
                    s.ack(pos, 1, size).map_err(State::spool_err)?;
                }
                if !self.spooling() {
                    self.replay_cursor = None;
                    self.delivered_ahead.clear();
                    tracing::info!(
                        replayed = self.stats.replayed.load(Ordering::Relaxed),
                        "spool replayed; sending directly again"
                    );
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "spool replay attempt failed");
                if !self.replay_failing || self.stats.replay_failures.fetch_add(1, Ordering::Relaxed).is_multiple_of(30)
                {
                    tracing::warn!(error = %e, "broker unavailable; the spool waits and is retried every second");
                }
                self.recover_if_fatal(&e)?;
                // What follows in this window still reports; the next
                // attempt starts again at the head.
                self.replay_failing = true;
                self.replay_broken = true;
                self.replay_cursor = None;
                self.next_replay = tokio::time::Instant::now() + Duration::from_secs(1);
            }
        }
        if self.replay.is_empty() {
            self.replay_broken = false;
        }
        if self.replay.len() < REPLAY_WINDOW / 2 && !self.purged {
            self.fill_replay()?;
        }
        Ok(())
    }
}

/// What the sink shares with the pipeline, handed to its state.
struct Shared {
    metrics: Arc<Metrics>,
    confirmed: Arc<AtomicU64>,
    stats: Arc<KafkaStats>,
    dead: super::DeadLetters,
    shutdown: tokio_util::sync::CancellationToken,
}

impl<'o> State<'o> {
    /// A producer, and the spool (replayed first if an earlier run left records).
    fn new(o: &'o KafkaOptions, reports: Arc<Reports>, shared: Shared) -> Result<State<'o>, SinkError> {
        let producer = producer(o, reports.clone())?;
        let spool = match &o.spool {
            Some(s) => Some(Spool::open(&s.dir, s.segment_bytes, s.max_bytes, s.fsync).map_err(State::spool_err)?),
            None => None,
        };
        if let Some(s) = &spool
            && !s.is_empty()
        {
            tracing::info!(
                records = s.len(),
                bytes = s.bytes(),
                "the spool holds records from an earlier run; replaying them first"
            );
        }
        let Shared { metrics, confirmed, stats, dead, shutdown } = shared;
        Ok(State {
            o,
            producer,
            retired: Vec::new(),
            spool,
            reports,
            direct: VecDeque::new(),
            direct_base: 0,
            replay: VecDeque::new(),
            replay_base: 0,
            purged: false,
            inflight_bytes: 0,
            open: BTreeMap::new(),
            stats,
            metrics,
            confirmed,
            replay_failing: false,
            next_replay: tokio::time::Instant::now(),
            replay_broken: false,
            replay_cursor: None,
            delivered_ahead: std::collections::BTreeSet::new(),
            last_progress: tokio::time::Instant::now(),
            blocked_since: None,
            shutdown,
            dead,
        })
    }

    /// Log when a full spool (policy `block`) pauses the input, and when it resumes.
    fn note_blocked(&mut self, blocked: bool) {
        match (blocked, self.blocked_since) {
            (true, None) => {
                self.blocked_since = Some(tokio::time::Instant::now());
                self.stats.blocks.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    spool_bytes = self.spool.as_ref().map_or(0, Spool::bytes),
                    "spool full: input paused until the broker takes records again (overflow policy block)"
                );
            }
            (false, Some(t)) => {
                self.blocked_since = None;
                tracing::info!(paused_secs = t.elapsed().as_secs(), "spool below its cap: input resumed");
            }
            _ => {}
        }
    }

    /// The periodic step: reports the producer resolved without a wake-up,
    /// the replay window, the spool gauge and head.
    fn tick(&mut self) -> Result<(), SinkError> {
        // Safety net for wake-ups, and replay sends refused at once
        // (they resolve without a report).
        self.apply_reports()?;
        if !self.purged {
            self.fill_replay()?;
        }
        if let Some(s) = self.spool.as_mut() {
            self.metrics.spool_backlog.store(s.len(), Ordering::Relaxed);
            self.metrics.spool_bytes.store(s.bytes(), Ordering::Relaxed);
            if self.replay.is_empty() {
                s.persist_head().map_err(State::spool_err)?;
            }
        }
        Ok(())
    }
}

/// Runs the sink until its input closes and everything is delivered or spooled.
pub async fn deliver(
    o: KafkaOptions,
    input: BatchRx,
    metrics: Arc<Metrics>,
    confirmed: Arc<AtomicU64>,
    stats: Arc<KafkaStats>,
    dead: super::DeadLetters,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<SinkSummary, SinkError> {
    let reports = Arc::new(Reports::default());
    let mut st = State::new(&o, reports.clone(), Shared { metrics, confirmed, stats, dead, shutdown })?;
    let mut summary = SinkSummary::default();
    let mut reorder = Reorder::default();
    let mut input_open = true;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    // When the input has ended with records still spooled, keep trying the
    // broker for a while before leaving them for the next start.
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    loop {
        if !input_open && st.direct.is_empty() && st.replay.is_empty() && !st.spooling() {
            break;
        }
        if !input_open {
            let d = *drain_deadline.get_or_insert_with(|| tokio::time::Instant::now() + st.o.drain_timeout);
            if tokio::time::Instant::now() >= d {
                if st.direct.is_empty() && st.replay.is_empty() {
                    break;
                }
                if !st.purged {
                    // Give up waiting: what the producer still holds comes
                    // back as failures and goes to the spool for the next start.
                    use rdkafka::producer::Producer as _;
                    st.producer.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
                    st.purged = true;
                }
            }
        }
        // In-flight bytes bound the input (backpressure), except that with a
        // spool, a stalled broker or a non-empty spool sends it to disk.
        let blocked = st.blocked();
        st.note_blocked(blocked);
        let room = !blocked && (st.inflight_bytes < o.max_inflight_bytes || st.spooling() || st.stalled());
        tokio::select! {
            batch = input.recv(), if input_open && room => {
                match batch {
                    Ok(batch) => {
                        for b in reorder.push(batch) {
                            st.take(b, &mut summary)?;
                        }
                    }
                    Err(_) => {
                        input_open = false;
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
