//! The `kafka` source: a consumer group reading raw posts (e.g. written by
//! collectors without stages), for enrichment workers that scale out by
//! partition.
//!
//! At-least-once: offsets are committed only after the sink has confirmed the
//! batches that carried them. Each batch's checkpoint is its sequence number
//! plus one; the sink publishes the highest checkpoint below which every batch is
//! written (or, for Kafka, delivered or spooled); a committer commits the
//! offsets of those batches every second, on a rebalance (partitions being
//! revoked) and at shutdown. A worker that dies uncommitted leaves its
//! partitions to another from the last commit: posts may repeat, never skip.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use serde::Deserialize;

use super::{
    BatchTx, Batching, RunSource, Source, SourceComponent, SourceContext, SourceError, SourceFuture, SourceSummary,
};
use crate::batch::Batcher;
use crate::component::{BaseDir, Problems};
use crate::post::Format;
use crate::secret::SecretRef;

/// `[source]` with `type = "kafka"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// `host:port,host:port`.
    pub brokers: String,
    /// Topics to read.
    pub topics: Vec<String>,
    /// Workers with the same group share the partitions.
    pub group_id: String,
    /// What the messages are: `twitter_v1` (default: collectors' output), `x_v2`, `jetstream`.
    #[serde(default = "default_format")]
    pub format: Format,
    /// Any librdkafka consumer property.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Properties whose values are secrets: `"sasl.password" = { env = "…" }`.
    #[serde(default)]
    pub secret_properties: BTreeMap<String, SecretRef>,
}

fn default_format() -> Format {
    Format::TwitterV1
}

impl SourceComponent for KafkaSourceConfig {
    fn check(&self, p: &mut Problems<'_>) {
        if self.topics.is_empty() {
            p.add("topics", "name at least one topic");
        }
        if self.group_id.is_empty() {
            p.add("group_id", "must not be empty");
        }
        if self.brokers.trim().is_empty() {
            p.add("brokers", "must name at least one broker");
        }
    }

    fn resolve_paths(&mut self, base: &BaseDir) {
        for s in self.secret_properties.values_mut() {
            base.fix_secret(s);
        }
    }

    fn format(&self) -> Format {
        self.format
    }

    fn build(&self, cx: &SourceContext) -> Result<Source, SourceError> {
        let mut properties: Vec<(String, String)> =
            self.properties.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (k, s) in &self.secret_properties {
            let v = s.resolve().map_err(|e| SourceError::Config(format!("source.secret_properties.{k}: {e}")))?;
            properties.push((k.clone(), v.expose().to_owned()));
        }
        let source = KafkaSource {
            opts: KafkaSourceOptions {
                brokers: self.brokers.clone(),
                topics: self.topics.clone(),
                group_id: self.group_id.clone(),
                properties,
            },
            batching: cx.batching,
            confirmed: cx.confirmed.clone(),
        };
        Ok(Source::new(source, self.format))
    }
}

/// Settings of the source.
#[derive(Debug, Clone)]
pub struct KafkaSourceOptions {
    pub brokers: String,
    pub topics: Vec<String>,
    pub group_id: String,
    /// librdkafka properties, secrets resolved.
    pub properties: Vec<(String, String)>,
}

/// Offsets read per batch, waiting for the sink's confirmation.
#[derive(Debug, Default)]
struct Ledger {
    /// batch seq → (topic, partition) → next offset to read.
    pending: BTreeMap<u64, BTreeMap<(String, i32), i64>>,
    /// Confirmed but not yet committed.
    ready: BTreeMap<(String, i32), i64>,
}

impl Ledger {
    /// Move batches below the confirmed checkpoint into `ready`.
    fn confirm(&mut self, confirmed: u64) {
        while let Some((&seq, _)) = self.pending.first_key_value() {
            if seq + 1 > confirmed {
                break;
            }
            if let Some((_, offs)) = self.pending.pop_first() {
                for (k, o) in offs {
                    let e = self.ready.entry(k).or_insert(o);
                    *e = (*e).max(o);
                }
            }
        }
    }

    fn take_ready(&mut self) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in std::mem::take(&mut self.ready) {
            let _ = tpl.add_partition_offset(&t, p, Offset::Offset(o));
        }
        tpl
    }
}

/// Commits what is confirmed before partitions are taken away.
struct Context {
    ledger: Arc<Mutex<Ledger>>,
    confirmed: Arc<AtomicU64>,
}

impl ClientContext for Context {}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(parts) = rebalance {
            let tpl = {
                let Ok(mut l) = self.ledger.lock() else { return };
                l.confirm(self.confirmed.load(Ordering::Acquire));
                l.take_ready()
            };
            if tpl.count() > 0
                && let Err(e) = consumer.commit(&tpl, CommitMode::Sync)
            {
                tracing::warn!(error = %e, "commit before rebalance failed; another worker may repeat some posts");
            }
            tracing::info!(partitions = parts.count(), "partitions revoked (rebalance)");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(parts) = rebalance {
            tracing::info!(partitions = parts.count(), "partitions assigned");
        }
    }
}

/// The running source.
pub struct KafkaSource {
    pub opts: KafkaSourceOptions,
    pub batching: Batching,
    pub confirmed: Arc<AtomicU64>,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource").field("brokers", &self.opts.brokers).field("topics", &self.opts.topics).finish()
    }
}

impl RunSource for KafkaSource {
    fn name(&self) -> String {
        format!("kafka {} {:?} group {}", self.opts.brokers, self.opts.topics, self.opts.group_id)
    }

    /// librdkafka accepts the properties (a client is made, no broker needed).
    fn check_environment(&self) -> Result<(), SourceError> {
        self.client_config()
            .create::<BaseConsumer>()
            .map(drop)
            .map_err(|e| SourceError::Config(format!("kafka consumer: {e}")))
    }

    fn run(self: Box<Self>, out: BatchTx, shutdown: CancellationToken) -> SourceFuture {
        Box::pin(self.consume(out, shutdown))
    }
}

impl KafkaSource {
    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.opts.brokers)
            .set("group.id", &self.opts.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest");
        for (k, v) in &self.opts.properties {
            c.set(k, v);
        }
        c
    }

    async fn consume(self, out: BatchTx, shutdown: CancellationToken) -> Result<SourceSummary, SourceError> {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let ctx = Context { ledger: ledger.clone(), confirmed: self.confirmed.clone() };
        let c = self.client_config();
        let consumer: StreamConsumer<Context> =
            c.create_with_context(ctx).map_err(|e| SourceError::Config(format!("kafka consumer: {e}")))?;
        let topics: Vec<&str> = self.opts.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(|e| SourceError::Config(format!("subscribe {topics:?}: {e}")))?;
        tracing::info!(topics = ?topics, group = %self.opts.group_id, "kafka source subscribed");

        let mut summary = SourceSummary::default();
        let mut batcher = Batcher::new(self.batching.max_records);
        let mut offsets: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut flush_at = tokio::time::Instant::now() + self.batching.max_wait;
        let mut commit_tick = tokio::time::interval(Duration::from_secs(1));
        let commit = |mode: CommitMode| {
            let tpl = {
                let Ok(mut l) = ledger.lock() else { return };
                l.confirm(self.confirmed.load(Ordering::Acquire));
                l.take_ready()
            };
            if tpl.count() > 0
                && let Err(e) = consumer.commit(&tpl, mode)
            {
                tracing::warn!(error = %e, "offset commit failed; retried with the next one");
            }
        };
        // Sends a full batch, remembering its offsets under its sequence number.
        let mut shipped: u64 = 0;
        let mut ship = |b: crate::batch::RawBatch, offsets: &mut BTreeMap<(String, i32), i64>| {
            let mut b = b;
            b.checkpoint = Some(b.seq + 1);
            shipped = shipped.max(b.seq + 1);
            if let Ok(mut l) = ledger.lock() {
                l.pending.insert(b.seq, std::mem::take(offsets));
            }
            b
        };
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep_until(flush_at) => {
                    if let Some(b) = batcher.flush() {
                        let b = ship(b, &mut offsets);
                        if out.send(b).await.is_err() { break; }
                    }
                    flush_at = tokio::time::Instant::now() + self.batching.max_wait;
                }
                _ = commit_tick.tick() => commit(CommitMode::Async),
                m = consumer.recv() => {
                    let m = match m {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::warn!(error = %e, "kafka consumer error");
                            continue;
                        }
                    };
                    let payload = m.payload().unwrap_or_default();
                    offsets.insert((m.topic().to_owned(), m.partition()), m.offset() + 1);
                    summary.records += 1;
                    summary.bytes += payload.len() as u64;
                    if let Some(b) = batcher.push(payload, summary.records) {
                        let b = ship(b, &mut offsets);
                        if out.send(b).await.is_err() { break; }
                    }
                }
            }
        }
        if let Some(b) = batcher.flush() {
            let b = ship(b, &mut offsets);
            let _ = out.send(b).await;
        }
        // Let the pipeline drain and the sink confirm, then commit (bounded).
        drop(out);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while self.confirmed.load(Ordering::Acquire) < shipped && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        commit(CommitMode::Sync);
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_confirmed_batches_are_committed() {
        let mut l = Ledger::default();
        l.pending.insert(0, BTreeMap::from([(("t".to_owned(), 0), 10)]));
        l.pending.insert(1, BTreeMap::from([(("t".to_owned(), 0), 20), (("t".to_owned(), 1), 5)]));
        l.pending.insert(2, BTreeMap::from([(("t".to_owned(), 1), 9)]));
        l.confirm(2); // batches 0 and 1 are written
        assert_eq!(l.take_ready().count(), 2);
        assert_eq!(l.pending.len(), 1);
        assert!(l.ready.is_empty());
        l.confirm(3);
        assert_eq!(l.take_ready().count(), 1);
    }
}
