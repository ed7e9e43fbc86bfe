//! The Kafka sink's librdkafka glue: the producer and its context (quiet
//! logs, delivery reports queued for the sink's loop), headers, and the
//! classification of a failed delivery. Everything that names an `rdkafka`
//! type for sending lives here or in [`super::delivery`]; [`super::mode`]
//! names none.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::message::{Header, Headers as _, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};

use super::KafkaOptions;
use crate::sinks::SinkError;
use crate::spool::{Pos, SpoolRecord};

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
    pub(super) notify: tokio::sync::Notify,
}

impl Reports {
    pub(super) fn take(&self) -> Vec<(usize, DirectDelivery)> {
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
pub(super) fn headers(o: &KafkaOptions, rules: &str) -> Vec<(String, Vec<u8>)> {
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
pub(super) fn direct_headers(o: &KafkaOptions, id: &str, rules: &str) -> OwnedHeaders {
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

pub(super) fn owned_headers(h: &[(String, Vec<u8>)]) -> OwnedHeaders {
    h.iter().fold(OwnedHeaders::new_with_capacity(h.len()), |acc, (k, v)| acc.insert(Header { key: k, value: Some(v) }))
}

/// A failed delivery: the message, and whether the producer itself is spent
/// (fenced or out of sequence: only a new producer id can send again).
#[derive(Debug, Clone)]
pub(super) struct Failed {
    pub(super) message: String,
    pub(super) producer_spent: bool,
    /// Refused for good (too large, invalid): sending it again cannot work.
    pub(super) refused: bool,
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
    let refused = matches!(
        e.rdkafka_error_code(),
        Some(
            C::MessageSizeTooLarge
                | C::InvalidMessageSize
                | C::MessageBatchTooLarge
                | C::InvalidRecord
                | C::UnsupportedForMessageFormat
                | C::BadMessage
        )
    );
    Failed { message: e.to_string(), producer_spent, refused }
}

/// A direct send's report: the failure comes with the record handed back.
pub(super) type DirectDelivery = Result<(), (Failed, Option<SpoolRecord>)>;

/// Hand one record to the producer (which copies it); its report comes back
/// through [`Reports`] under `token`. `Err`: refused at once (e.g. the
/// producer's queue is full); no report follows.
pub(super) fn send_raw(
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

/// A replayed record's report.
pub(super) type ReplayResult = Result<(), Failed>;

/// A replayed record in flight, in spool order.
#[derive(Debug)]
pub(super) struct ReplayEntry {
    /// Position after it, spooled size, value bytes.
    pub(super) pos: Pos,
    pub(super) size: u64,
    pub(super) bytes: u64,
    /// Delivered in an earlier window: acknowledged without sending.
    pub(super) already: bool,
    /// Its report, once in.
    pub(super) result: Option<ReplayResult>,
    /// Refused for good: the record, for the dead-letter topic or file.
    pub(super) refused: Option<SpoolRecord>,
}

/// Tokens of replayed records carry this bit; direct sends do not.
pub(super) const REPLAY_TOKEN: usize = 1 << (usize::BITS - 1);
/// Tokens of records sent to the dead-letter topic carry this bit.
pub(super) const DEAD_TOKEN: usize = 1 << (usize::BITS - 2);
