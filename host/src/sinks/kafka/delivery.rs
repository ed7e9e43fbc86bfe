//! The Kafka sink's state: taking batches (sent directly, or spooled to
//! keep order), delivery reports, keeping what failed, confirming batches.
//! The replay of the spool is in [`super::replay`]; the modes and their
//! transitions in [`super::mode`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::mode::{self, IntakeChange, Mode, ReplayEvent};
use super::producer::{
    DEAD_TOKEN, DirectDelivery, Failed, Producer, REPLAY_TOKEN, ReplayEntry, Reports, direct_headers, headers,
    owned_headers, producer, send_raw,
};
use super::{Delivery, KafkaOptions, KafkaStats};
use crate::batch::OutBatch;
use crate::sinks::{DeadLetters, LineSink as _, SinkError, SinkSummary};
use crate::spool::{Overflow, Pos, Spool, SpoolError, SpoolRecord};
use crate::telemetry::Metrics;

/// A batch handed to the producer: records not yet delivered or safely
/// spooled, and (records, read time) for the end-to-end
/// latency, observed when the last record is through.
type OpenBatch = (usize, Option<(u64, std::time::Instant)>);

/// The sink's state between select rounds. Its mode (replay health, input
/// phase, paused intake) is [`Mode`]; the rest is bookkeeping of records in
/// flight and the handles the sink shares with the pipeline.
// DRAFT-CHECK: every field is pub(super) so that replay.rs and mod.rs
// (siblings) reach them; narrow to accessors if preferred.
pub(super) struct State<'a> {
    pub(super) o: &'a KafkaOptions,
    pub(super) producer: Producer,
    /// Replaced producers, kept until their outstanding reports are in
    /// (dropping one early would lose the records it holds).
    pub(super) retired: Vec<Producer>,
    pub(super) spool: Option<Spool>,
    pub(super) reports: Arc<Reports>,
    /// Direct sends awaiting their report, by token − `direct_base`:
    /// (batch seq, value bytes, sent at); `None` once reported (front trimmed).
    pub(super) direct: VecDeque<Option<(u64, u64, std::time::Instant)>>,
    pub(super) direct_base: usize,
    /// Replayed records in flight, in spool order, by token − `replay_base`.
    pub(super) replay: VecDeque<ReplayEntry>,
    /// Records sent to the dead-letter topic whose reports are not in yet
    /// (the drain waits for them too).
    pub(super) dead_outstanding: usize,
    pub(super) replay_base: usize,
    pub(super) inflight_bytes: u64,
    /// Per batch: records not yet delivered or safely spooled,
    /// and (records, read time) for the end-to-end latency.
    pub(super) open: BTreeMap<u64, OpenBatch>,
    pub(super) stats: Arc<KafkaStats>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) confirmed: Arc<AtomicU64>,
    /// Replay health, input phase, paused intake.
    pub(super) mode: Mode,
    /// Where the next replay read starts (`None`: the spool's head).
    pub(super) replay_cursor: Option<Pos>,
    /// Replayed records delivered after an earlier one of their window
    /// failed: acknowledged without sending when the replay reaches them
    /// again, so a failed window does not duplicate what did get through.
    pub(super) delivered_ahead: std::collections::BTreeSet<Pos>,
    /// When the last delivery report arrived (stall detection).
    pub(super) last_progress: tokio::time::Instant,
    /// Once shutting down, a full spool (policy `block`) takes what the
    /// pipeline still holds, past its cap, so the drain can finish.
    pub(super) shutdown: tokio_util::sync::CancellationToken,
    /// Dead letters (small and rare, written inline).
    pub(super) dead: DeadLetters,
}

impl State<'_> {
    pub(super) fn spool_err(e: SpoolError) -> SinkError {
        SinkError::Write { target: "spool".into(), source: std::io::Error::other(e.to_string()) }
    }

    /// The spool holds records: new records go there too (order holds).
    pub(super) fn spooling(&self) -> bool {
        self.spool.as_ref().is_some_and(|s| !s.is_empty())
    }

    /// The spool is full and its policy is `block`: take no input.
    pub(super) fn blocked(&self) -> bool {
        mode::blocks_input(
            self.shutdown.is_cancelled(),
            self.o.spool.as_ref().is_some_and(|o| o.overflow == Overflow::Block),
            self.spool.as_ref().is_some_and(Spool::is_full),
        )
    }

    /// In-flight bytes are full and no report has come for `spill_after`:
    /// with a spool, input goes to disk rather than waiting in memory.
    pub(super) fn stalled(&self) -> bool {
        mode::stalled(
            self.spool.is_some(),
            self.inflight_bytes >= self.o.max_inflight_bytes,
            || self.last_progress.elapsed(),
            self.o.spill_after,
        )
    }

    /// After a failure: an idempotent producer can end in a fatal state (e.g.
    /// fenced after an epoch bump on a broker that came back); it never sends
    /// again, so it is replaced by a fresh one (new producer id).
    pub(super) fn recover_if_fatal(&mut self, f: &Failed) -> Result<(), SinkError> {
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

    /// The broker refused `rec` for good: to the dead-letter topic (its
    /// report comes back under [`DEAD_TOKEN`]), else the dead-letter file.
    pub(super) fn refused(&mut self, rec: SpoolRecord, e: &Failed) -> Result<(), SinkError> {
        let n = self.metrics.sink_refused.fetch_add(1, Ordering::Relaxed);
        if n == 0 || (n + 1).is_power_of_two() {
            tracing::error!(error = %e, bytes = rec.value.len(), refused = n + 1, dead_letter_topic = ?self.o.dead_letter_topic,
                "the broker refused a record for good; it goes to the dead letters");
        }
        if let Some(topic) = &self.o.dead_letter_topic {
            let mut headers = owned_headers(&rec.headers);
            headers =
                headers.insert(rdkafka::message::Header { key: "traptor-refused", value: Some(e.message.as_bytes()) });
            match send_raw(&self.producer, topic, &rec.key, &rec.value, headers, DEAD_TOKEN) {
                Ok(()) => {
                    self.dead_outstanding += 1;
                    return Ok(());
                }
                Err(again) => {
                    tracing::warn!(error = %again, "the dead-letter topic refused it too; to the dead-letter file")
                }
            }
        }
        self.dead_file(&rec.value)
    }

    /// A refused record to `[dead_letter]`'s file (counted either way).
    fn dead_file(&mut self, value: &[u8]) -> Result<(), SinkError> {
        self.dead.write_line(value)?;
        self.dead.idle()?;
        Metrics::add(&self.metrics.dead_letters_out, 1);
        Ok(())
    }

    /// A dead-letter topic's report.
    pub(super) fn dead_reported(&mut self, outcome: DirectDelivery) -> Result<(), SinkError> {
        self.dead_outstanding = self.dead_outstanding.saturating_sub(1);
        match outcome {
            Ok(()) => {
                Metrics::add(&self.metrics.dead_letters_out, 1);
                Ok(())
            }
            Err((e, rec)) => {
                tracing::warn!(error = %e, "the dead-letter topic refused a record; to the dead-letter file");
                match rec {
                    Some(r) => self.dead_file(&r.value),
                    None => Ok(()),
                }
            }
        }
    }

    /// A direct send failed: keep the record the producer handed back.
    fn direct_failed(&mut self, e: &Failed, rec: Option<SpoolRecord>) -> Result<(), SinkError> {
        if e.refused
            && let Some(rec) = rec
        {
            return self.refused(rec, e);
        }
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
        let now = tokio::time::Instant::now();
        self.mode.replay = self.mode.replay.on(ReplayEvent::DirectFailed { now }).0;
        Ok(())
    }

    pub(super) fn delivered(&self, bytes: u64) {
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
    pub(super) fn take(&mut self, b: OutBatch, summary: &mut SinkSummary) -> Result<(), SinkError> {
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
                Err(e) if e.refused => self.refused(spool_record(), &e)?,
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
}

impl<'o> State<'o> {
    /// A producer, and the spool (replayed first if an earlier run left records).
    pub(super) fn new(o: &'o KafkaOptions, reports: Arc<Reports>, d: Delivery) -> Result<State<'o>, SinkError> {
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
        let Delivery { metrics, confirmed, stats, dead, shutdown } = d;
        Ok(State {
            o,
            producer,
            retired: Vec::new(),
            spool,
            reports,
            direct: VecDeque::new(),
            direct_base: 0,
            replay: VecDeque::new(),
            dead_outstanding: 0,
            replay_base: 0,
            inflight_bytes: 0,
            open: BTreeMap::new(),
            stats,
            metrics,
            confirmed,
            mode: Mode::new(),
            replay_cursor: None,
            delivered_ahead: std::collections::BTreeSet::new(),
            last_progress: tokio::time::Instant::now(),
            shutdown,
            dead,
        })
    }

    /// Log when a full spool (policy `block`) pauses the input, and when it resumes.
    pub(super) fn note_blocked(&mut self, blocked: bool, now: tokio::time::Instant) {
        let (intake, change) = self.mode.intake.on(blocked, now);
        self.mode.intake = intake;
        match change {
            Some(IntakeChange::Paused) => {
                self.stats.blocks.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    spool_bytes = self.spool.as_ref().map_or(0, Spool::bytes),
                    "spool full: input paused until the broker takes records again (overflow policy block)"
                );
            }
            Some(IntakeChange::Resumed { since }) => {
                tracing::info!(paused_secs = since.elapsed().as_secs(), "spool below its cap: input resumed");
            }
            None => {}
        }
    }

    /// The periodic step: reports the producer resolved without a wake-up,
    /// the replay window, the spool gauge and head.
    pub(super) fn tick(&mut self) -> Result<(), SinkError> {
        // Safety net for wake-ups, and replay sends refused at once
        // (they resolve without a report).
        self.apply_reports()?;
        if self.mode.phase.replays() {
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

    /// Apply the delivery reports that have come in.
    pub(super) fn apply_reports(&mut self) -> Result<(), SinkError> {
        for (token, outcome) in self.reports.take() {
            if token == DEAD_TOKEN {
                self.dead_reported(outcome)?;
                continue;
            }
            if token & REPLAY_TOKEN != 0 {
                let i = (token & !REPLAY_TOKEN).wrapping_sub(self.replay_base);
                if let Some(e) = self.replay.get_mut(i) {
                    e.result = Some(outcome.map_err(|(f, rec)| {
                        if f.refused {
                            e.refused = rec;
                        }
                        f
                    }));
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

    /// The drain gave up: what the producer still holds comes back as
    /// failures and goes to the spool for the next start.
    pub(super) fn purge_producer(&self) {
        use rdkafka::producer::Producer as _;
        self.producer.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
    }
}
