//! The Kafka sink's spool replay: a window of spooled records in flight, in
//! spool order; acknowledged in that order as their reports come in, so the
//! spool's head moves only past delivered records. After a failure, one
//! probe record a second ([`super::mode::Replay`] says which).

use std::sync::atomic::Ordering;

use super::delivery::State;
use super::mode::{Fill, ReplayAction, ReplayEvent};
use super::producer::{REPLAY_TOKEN, ReplayEntry, owned_headers, send_raw};
use crate::sinks::SinkError;
use crate::spool::spooled_size;

/// Replayed records in flight at most (also bounded by `max_inflight_bytes`).
const REPLAY_WINDOW: usize = 20_000;
/// Records read from the spool per step.
const REPLAY_CHUNK: usize = 1_000;

impl State<'_> {
    /// Keep the replay window full: records from the spool, in order, up to
    /// `REPLAY_WINDOW` and the in-flight bound. After a failure, one probe
    /// record at a time, once a second, until the broker answers.
    pub(super) fn fill_replay(&mut self) -> Result<(), SinkError> {
        match self.mode.replay.fill(self.spooling(), self.replay.is_empty(), tokio::time::Instant::now) {
            Fill::Nothing => Ok(()),
            Fill::Probe => self.push_replay(1).map(|_| ()),
            Fill::Window => {
                while self.replay.len() < REPLAY_WINDOW && self.inflight_bytes < self.o.max_inflight_bytes {
                    if self.push_replay(REPLAY_CHUNK)? == 0 {
                        break;
                    }
                }
                Ok(())
            }
        }
    }

    /// Send up to `n` spooled records after the replay cursor.
    fn push_replay(&mut self, n: usize) -> Result<usize, SinkError> {
        let Some(s) = self.spool.as_mut() else { return Ok(0) };
        let from = self.replay_cursor.unwrap_or_else(|| s.head());
        let recs = s.peek_from(from, n).map_err(State::spool_err)?;
        if self.stats.replayed.load(Ordering::Relaxed) == 0 && self.replay.is_empty() && self.mode.replay.is_flowing() {
            tracing::info!(records = s.len(), "replaying the spool");
        }
        let count = recs.len();
        for (pos, rec) in recs {
            self.replay_cursor = Some(pos);
            let size = spooled_size(&rec);
            let bytes = rec.value.len() as u64;
            if self.delivered_ahead.remove(&pos) {
                self.replay.push_back(ReplayEntry {
                    pos,
                    size,
                    bytes,
                    already: true,
                    result: Some(Ok(())),
                    refused: None,
                });
                continue;
            }
            self.inflight_bytes += bytes;
            let token = REPLAY_TOKEN | (self.replay_base + self.replay.len());
            let sent =
                send_raw(&self.producer, &self.o.topic, &rec.key, &rec.value, owned_headers(&rec.headers), token);
            // Refused at once: it resolves now, as a failure (no report follows).
            let refused = sent.as_ref().err().filter(|e| e.refused).map(|_| rec.clone());
            let result = sent.err().map(Err);
            self.replay.push_back(ReplayEntry { pos, size, bytes, already: false, result, refused });
        }
        Ok(count)
    }

    /// Acknowledge replayed records whose reports are in, in spool order.
    pub(super) fn replay_reported(&mut self) -> Result<(), SinkError> {
        while self.replay.front().is_some_and(|e| e.result.is_some()) {
            let Some(e) = self.replay.pop_front() else { break };
            self.replay_base += 1;
            self.replay_done(e)?;
        }
        Ok(())
    }

    /// One replayed record's report, in spool order.
    fn replay_done(&mut self, e: ReplayEntry) -> Result<(), SinkError> {
        let ReplayEntry { pos, size, bytes, mut already, result, refused } = e;
        if !already {
            self.inflight_bytes = self.inflight_bytes.saturating_sub(bytes);
        }
        // Refused for good: to the dead letters, then acknowledged in the
        // spool like a delivered record (sending it again cannot work, and it
        // would hold the spool's head for ever).
        let result = match (result, refused) {
            (Some(Err(f)), Some(rec)) if f.refused => {
                self.refused(rec, &f)?;
                already = true;
                Ok(())
            }
            (r, _) => r.unwrap_or(Ok(())),
        };
        match result {
            Ok(()) => {
                let (replay, action) = self.mode.replay.on(ReplayEvent::Delivered);
                self.mode.replay = replay;
                if !already {
                    self.delivered(bytes);
                    self.last_progress = tokio::time::Instant::now();
                }
                if action == ReplayAction::RememberAhead {
                    // An earlier record of this window failed, so the head
                    // cannot move past it; remember this one as sent.
                    self.delivered_ahead.insert(pos);
                } else {
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
            }
            Err(e) => {
                tracing::debug!(error = %e, "spool replay attempt failed");
                // The first failure after a delivery warns at once; repeats every 30th time.
                if self.mode.replay.is_flowing()
                    || self.stats.replay_failures.fetch_add(1, Ordering::Relaxed).is_multiple_of(30)
                {
                    tracing::warn!(error = %e, "broker unavailable; the spool waits and is retried every second");
                }
                self.recover_if_fatal(&e)?;
                // What follows in this window still reports; the next
                // attempt starts again at the head.
                let (replay, action) = self.mode.replay.on(ReplayEvent::Failed { now: tokio::time::Instant::now() });
                self.mode.replay = replay;
                if action == ReplayAction::Restart {
                    self.replay_cursor = None;
                }
            }
        }
        if self.replay.is_empty() {
            self.mode.replay = self.mode.replay.on(ReplayEvent::WindowEmpty).0;
        }
        if self.replay.len() < REPLAY_WINDOW / 2 && self.mode.phase.replays() {
            self.fill_replay()?;
        }
        Ok(())
    }
}
