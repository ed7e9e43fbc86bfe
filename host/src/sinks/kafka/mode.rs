//! The Kafka sink's modes as types (STYLE 18): pure transitions, tested
//! without a broker, a runtime or librdkafka. The sink's state
//! ([`super::delivery::State`]) feeds events in and carries out what comes
//! back; nothing here reads a clock (`now` comes with the event) or does I/O.
//!
//! Three independent axes, each an enum (one enum over all of them would be
//! their product, most of whose combinations have no name):
//!
//! * [`Replay`]: how the spool is retried: a full window while the broker
//!   takes records, one probe a second after a failure, and, while a failed
//!   window's later records still report, "broken" (those that get through
//!   are remembered so the retry does not send them twice).
//! * [`Phase`]: the input is read; it has ended and the sink drains (records
//!   in flight and in the spool get `drain_timeout`); the drain gave up and
//!   the producer was purged.
//! * [`Intake`]: a full spool with overflow policy `block` pauses the input.
//!
//! Where a new record goes (to the producer, or to the spool so that order
//! holds) is not stored here: the spool is the one place of that fact
//! (`spooling` = the spool is not empty), passed in where a decision needs it.
//!
//! ```text
//! Replay   Flowing ─┬─ direct failed ─▶ Probing{now+1s}
//!          Probing ─┘
//!          Broken  ── direct failed ─▶ Broken{now+1s}
//!          any     ── replay failed ─▶ Broken{now+1s}        restart at the head
//!          Flowing, Probing ── replay delivered ─▶ Flowing    ack (the head moves)
//!          Broken  ── replay delivered ─▶ Broken              remember (delivered ahead)
//!          Broken{t} ── window empty ─▶ Probing{t}
//!
//! Phase    Taking ── input closed ─▶ Ended ── step ─▶ Draining{now+drain_timeout}
//!          Ended, Draining: nothing in flight, spool empty ─▶ finish
//!          Draining past its deadline: nothing in flight ─▶ finish; else ─▶ Purged (purge)
//!          Purged: nothing in flight ─▶ finish
//!
//! Intake   Open ── blocked ─▶ Paused{now} ── not blocked ─▶ Open
//! ```

use std::time::Duration;

use tokio::time::Instant;

/// After a failure, the spool is probed with one record this often.
pub(super) const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The sink's mode: the three axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Mode {
    pub(super) replay: Replay,
    pub(super) phase: Phase,
    pub(super) intake: Intake,
}

impl Mode {
    /// At start: nothing has failed, the input is read.
    pub(super) const fn new() -> Mode {
        Mode { replay: Replay::Flowing, phase: Phase::Taking, intake: Intake::Open }
    }

    /// Whether the loop reads its input this round: in-flight bytes bound
    /// the input (backpressure), except that with a spool, a stalled broker
    /// or a non-empty spool sends it to disk; a paused intake reads nothing.
    pub(super) fn reads_input(&self, below_bound: bool, spooling: bool, stalled: bool) -> bool {
        self.phase.reads_input() && self.intake == Intake::Open && (below_bound || spooling || stalled)
    }
}

// ---- replay ---------------------------------------------------------------

/// How the spool is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Replay {
    /// Nothing has failed since the last delivered replayed record: the
    /// replay keeps a full window in flight.
    Flowing,
    /// A send failed: one probe record at a time, none before `next`, until
    /// one is delivered.
    Probing { next: Instant },
    /// A replayed record failed while later ones of its window are still in
    /// flight: those delivered are remembered (the head cannot move past the
    /// failed one); probing resumes, at `next`, once the window is empty.
    Broken { next: Instant },
}

/// What happens to the replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReplayEvent {
    /// A direct send failed (reported failed, or refused at once).
    DirectFailed { now: Instant },
    /// A replayed record is through (reported delivered, or delivered in an
    /// earlier window).
    Delivered,
    /// A replayed record failed.
    Failed { now: Instant },
    /// The last replayed record in flight has reported.
    WindowEmpty,
}

/// What the sink does about a replay event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReplayAction {
    None,
    /// Acknowledge the record: the spool's head moves past it.
    Ack,
    /// Keep the head; acknowledge the record without sending when the
    /// replay reaches it again (`delivered_ahead`).
    RememberAhead,
    /// The next attempt reads from the spool's head again.
    Restart,
}

/// What the replay sends next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fill {
    Nothing,
    /// One record, to see whether the broker is back.
    Probe,
    /// As many as the window and the in-flight bound allow.
    Window,
}

impl Replay {
    /// The transition.
    pub(super) fn on(self, event: ReplayEvent) -> (Replay, ReplayAction) {
        use ReplayEvent as E;
        match (self, event) {
            (Replay::Broken { .. }, E::DirectFailed { now }) => {
                (Replay::Broken { next: now + PROBE_EVERY }, ReplayAction::None)
            }
            (Replay::Flowing | Replay::Probing { .. }, E::DirectFailed { now }) => {
                (Replay::Probing { next: now + PROBE_EVERY }, ReplayAction::None)
            }
            (Replay::Broken { .. }, E::Delivered) => (self, ReplayAction::RememberAhead),
            (Replay::Flowing | Replay::Probing { .. }, E::Delivered) => (Replay::Flowing, ReplayAction::Ack),
            (_, E::Failed { now }) => (Replay::Broken { next: now + PROBE_EVERY }, ReplayAction::Restart),
            (Replay::Broken { next }, E::WindowEmpty) => (Replay::Probing { next }, ReplayAction::None),
            (Replay::Flowing | Replay::Probing { .. }, E::WindowEmpty) => (self, ReplayAction::None),
        }
    }

    /// What to send from the spool now. `spooling`: the spool holds records;
    /// `window_empty`: no replayed record is in flight; `now` is read only
    /// while probing (this is asked for every replayed record).
    pub(super) fn fill(self, spooling: bool, window_empty: bool, now: impl FnOnce() -> Instant) -> Fill {
        if !spooling {
            return Fill::Nothing;
        }
        match self {
            Replay::Flowing => Fill::Window,
            Replay::Probing { next } | Replay::Broken { next } => {
                if !window_empty || now() < next {
                    Fill::Nothing
                } else {
                    Fill::Probe
                }
            }
        }
    }

    /// No failure since the last delivered replayed record: a replay failure
    /// now is the first of a run (warned at once; repeats every 30th), and
    /// a replay starting now is announced.
    pub(super) fn is_flowing(self) -> bool {
        self == Replay::Flowing
    }
}

// ---- phase ----------------------------------------------------------------

/// Whether input is still coming, and the drain after it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Reading the input.
    Taking,
    /// The input has ended; the drain's deadline is set at the next step.
    Ended,
    /// The input has ended: records in flight and in the spool get until
    /// `deadline` before they are left for the next start.
    Draining { deadline: Instant },
    /// The drain gave up: the producer was purged (what it held comes back
    /// as failures and is spooled); no more replay. The run ends once
    /// nothing is in flight.
    Purged,
}

/// What happens to the phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PhaseEvent {
    /// The input channel closed (every batch taken).
    InputClosed,
    /// The top of a round of the sink's loop. `in_flight`: direct or
    /// replayed records await their reports; `spooling`: the spool holds
    /// records.
    Step { now: Instant, drain_timeout: Duration, in_flight: bool, spooling: bool },
}

/// What the loop does after a phase event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    Continue,
    /// Give up waiting: purge the producer (its records come back as failed
    /// reports and go to the spool for the next start), then continue.
    Purge,
    /// Leave the loop.
    Finish,
}

impl Phase {
    /// The transition.
    pub(super) fn on(self, event: PhaseEvent) -> (Phase, Step) {
        match event {
            PhaseEvent::InputClosed => match self {
                Phase::Taking => (Phase::Ended, Step::Continue),
                // DRAFT-CHECK: unreachable today (the input is not read once
                // it has closed); left unchanged.
                Phase::Ended | Phase::Draining { .. } | Phase::Purged => (self, Step::Continue),
            },
            PhaseEvent::Step { now, drain_timeout, in_flight, spooling } => {
                let deadline = match self {
                    Phase::Taking => return (self, Step::Continue),
                    _ if !in_flight && !spooling => return (self, Step::Finish),
                    // Past the deadline already: time only moves on.
                    Phase::Purged => return (self, if in_flight { Step::Continue } else { Step::Finish }),
                    Phase::Ended => now + drain_timeout,
                    Phase::Draining { deadline } => deadline,
                };
                if now < deadline {
                    (Phase::Draining { deadline }, Step::Continue)
                } else if !in_flight {
                    (Phase::Draining { deadline }, Step::Finish)
                } else {
                    (Phase::Purged, Step::Purge)
                }
            }
        }
    }

    /// The loop reads its input.
    pub(super) fn reads_input(self) -> bool {
        self == Phase::Taking
    }

    /// The spool is still replayed (not after the drain gave up).
    pub(super) fn replays(self) -> bool {
        self != Phase::Purged
    }
}

// ---- intake ---------------------------------------------------------------

/// Whether a full spool (overflow policy `block`) pauses the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Intake {
    Open,
    Paused { since: Instant },
}

/// A change of the intake, to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IntakeChange {
    Paused,
    Resumed { since: Instant },
}

impl Intake {
    /// The transition, given whether the input is blocked now.
    pub(super) fn on(self, blocked: bool, now: Instant) -> (Intake, Option<IntakeChange>) {
        match (blocked, self) {
            (true, Intake::Open) => (Intake::Paused { since: now }, Some(IntakeChange::Paused)),
            (false, Intake::Paused { since }) => (Intake::Open, Some(IntakeChange::Resumed { since })),
            (true, Intake::Paused { .. }) | (false, Intake::Open) => (self, None),
        }
    }
}

/// The input is blocked: the spool is full, its policy is `block`, and the
/// run is not shutting down (then a full spool takes what the pipeline still
/// holds, past its cap, so the drain can finish).
pub(super) fn blocks_input(shutting_down: bool, policy_block: bool, spool_full: bool) -> bool {
    !shutting_down && policy_block && spool_full
}

/// The broker counts as stalled: there is a spool, in-flight bytes are at
/// their bound, and no report has come for `spill_after`. Input then goes to
/// disk rather than waiting in memory.
/// `quiet_for` (time since the last report) is read only when the first two
/// hold: this is asked for every record taken.
pub(super) fn stalled(
    has_spool: bool,
    at_bound: bool,
    quiet_for: impl FnOnce() -> Duration,
    spill_after: Duration,
) -> bool {
    has_spool && at_bound && quiet_for() >= spill_after
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    // ---- replay

    #[test]
    fn a_direct_failure_while_flowing_probes_after_a_second() {
        let now = t0();
        let (r, a) = Replay::Flowing.on(ReplayEvent::DirectFailed { now });
        assert_eq!(r, Replay::Probing { next: now + PROBE_EVERY });
        assert_eq!(a, ReplayAction::None);
    }

    #[test]
    fn a_direct_failure_while_probing_puts_the_probe_back() {
        let now = t0();
        let (r, a) = Replay::Probing { next: now }.on(ReplayEvent::DirectFailed { now: now + secs(5) });
        assert_eq!(r, Replay::Probing { next: now + secs(5) + PROBE_EVERY });
        assert_eq!(a, ReplayAction::None);
    }

    #[test]
    fn a_direct_failure_while_broken_stays_broken_with_a_later_probe() {
        let now = t0();
        let (r, a) = Replay::Broken { next: now }.on(ReplayEvent::DirectFailed { now: now + secs(2) });
        assert_eq!(r, Replay::Broken { next: now + secs(2) + PROBE_EVERY });
        assert_eq!(a, ReplayAction::None);
    }

    #[test]
    fn a_replay_failure_breaks_the_window_and_restarts_at_the_head_from_every_mode() {
        let now = t0();
        for from in [Replay::Flowing, Replay::Probing { next: now }, Replay::Broken { next: now }] {
            let (r, a) = from.on(ReplayEvent::Failed { now: now + secs(3) });
            assert_eq!(r, Replay::Broken { next: now + secs(3) + PROBE_EVERY }, "from {from:?}");
            assert_eq!(a, ReplayAction::Restart, "from {from:?}");
        }
    }

    #[test]
    fn only_the_first_replay_failure_of_a_run_is_warned_at_once() {
        let now = t0();
        assert!(Replay::Flowing.is_flowing());
        let (r, _) = Replay::Flowing.on(ReplayEvent::Failed { now });
        assert!(!r.is_flowing(), "the next failure is a repeat");
        assert!(!Replay::Probing { next: now }.is_flowing());
    }

    #[test]
    fn a_delivered_replay_acks_while_flowing() {
        assert_eq!(Replay::Flowing.on(ReplayEvent::Delivered), (Replay::Flowing, ReplayAction::Ack));
    }

    #[test]
    fn a_delivered_probe_means_the_broker_is_back() {
        let now = t0();
        assert_eq!(Replay::Probing { next: now }.on(ReplayEvent::Delivered), (Replay::Flowing, ReplayAction::Ack));
    }

    #[test]
    fn a_delivered_replay_after_a_failure_in_its_window_is_remembered_not_acked() {
        let now = t0();
        let broken = Replay::Broken { next: now };
        assert_eq!(broken.on(ReplayEvent::Delivered), (broken, ReplayAction::RememberAhead));
    }

    #[test]
    fn an_empty_window_turns_broken_into_probing_at_the_same_time() {
        let now = t0();
        assert_eq!(
            Replay::Broken { next: now }.on(ReplayEvent::WindowEmpty),
            (Replay::Probing { next: now }, ReplayAction::None)
        );
        assert_eq!(
            Replay::Probing { next: now }.on(ReplayEvent::WindowEmpty),
            (Replay::Probing { next: now }, ReplayAction::None)
        );
        assert_eq!(Replay::Flowing.on(ReplayEvent::WindowEmpty), (Replay::Flowing, ReplayAction::None));
    }

    #[test]
    fn an_outage_and_recovery_in_sequence() {
        let now = t0();
        // A window in flight; its first record fails, a later one gets through.
        let (r, _) = Replay::Flowing.on(ReplayEvent::Failed { now });
        let (r, a) = r.on(ReplayEvent::Delivered);
        assert_eq!(a, ReplayAction::RememberAhead);
        let (r, _) = r.on(ReplayEvent::WindowEmpty);
        assert_eq!(r, Replay::Probing { next: now + PROBE_EVERY });
        // Too early, then one probe; it fails, then one is delivered.
        assert_eq!(r.fill(true, true, || now), Fill::Nothing);
        assert_eq!(r.fill(true, true, || now + PROBE_EVERY), Fill::Probe);
        let (r, _) = r.on(ReplayEvent::Failed { now: now + PROBE_EVERY });
        let (r, _) = r.on(ReplayEvent::WindowEmpty);
        assert_eq!(r.fill(true, true, || now + PROBE_EVERY * 2), Fill::Probe);
        let (r, a) = r.on(ReplayEvent::Delivered);
        assert_eq!((r, a), (Replay::Flowing, ReplayAction::Ack));
        assert_eq!(r.fill(true, true, || now), Fill::Window);
    }

    #[test]
    fn fill_sends_nothing_without_spooled_records() {
        let now = t0();
        for r in [Replay::Flowing, Replay::Probing { next: now }, Replay::Broken { next: now }] {
            assert_eq!(r.fill(false, true, || now + secs(10)), Fill::Nothing, "{r:?}");
        }
    }

    #[test]
    fn fill_keeps_a_window_while_flowing_even_with_records_in_flight() {
        let now = t0();
        assert_eq!(Replay::Flowing.fill(true, true, || now), Fill::Window);
        assert_eq!(Replay::Flowing.fill(true, false, || now), Fill::Window);
    }

    #[test]
    fn fill_probes_one_record_at_its_time_with_nothing_in_flight() {
        let now = t0();
        for r in [Replay::Probing { next: now + secs(1) }, Replay::Broken { next: now + secs(1) }] {
            assert_eq!(r.fill(true, true, || now), Fill::Nothing, "before its time: {r:?}");
            assert_eq!(r.fill(true, false, || now + secs(2)), Fill::Nothing, "a record in flight: {r:?}");
            assert_eq!(r.fill(true, true, || now + secs(1)), Fill::Probe, "at its time: {r:?}");
            assert_eq!(r.fill(true, true, || now + secs(2)), Fill::Probe, "after it: {r:?}");
        }
    }

    // ---- phase

    fn step(now: Instant, in_flight: bool, spooling: bool) -> PhaseEvent {
        PhaseEvent::Step { now, drain_timeout: secs(60), in_flight, spooling }
    }

    #[test]
    fn while_taking_the_loop_never_ends() {
        let now = t0();
        for (f, s) in [(false, false), (true, false), (false, true), (true, true)] {
            assert_eq!(Phase::Taking.on(step(now, f, s)), (Phase::Taking, Step::Continue));
        }
        assert!(Phase::Taking.reads_input() && Phase::Taking.replays());
    }

    #[test]
    fn the_input_closing_ends_taking() {
        assert_eq!(Phase::Taking.on(PhaseEvent::InputClosed), (Phase::Ended, Step::Continue));
        assert!(!Phase::Ended.reads_input() && Phase::Ended.replays());
    }

    #[test]
    fn ended_with_nothing_left_finishes_at_once() {
        assert_eq!(Phase::Ended.on(step(t0(), false, false)), (Phase::Ended, Step::Finish));
    }

    #[test]
    fn ended_with_work_left_starts_the_drain_clock() {
        let now = t0();
        for (f, s) in [(true, false), (false, true), (true, true)] {
            assert_eq!(
                Phase::Ended.on(step(now, f, s)),
                (Phase::Draining { deadline: now + secs(60) }, Step::Continue)
            );
        }
    }

    #[test]
    fn a_zero_drain_timeout_gives_up_at_the_first_step() {
        let now = t0();
        let ev = |in_flight, spooling| PhaseEvent::Step { now, drain_timeout: Duration::ZERO, in_flight, spooling };
        assert_eq!(Phase::Ended.on(ev(true, true)), (Phase::Purged, Step::Purge));
        assert_eq!(Phase::Ended.on(ev(false, true)), (Phase::Draining { deadline: now }, Step::Finish));
    }

    #[test]
    fn draining_keeps_trying_the_spool_until_the_deadline() {
        let now = t0();
        let d = Phase::Draining { deadline: now + secs(60) };
        assert_eq!(d.on(step(now + secs(59), false, true)), (d, Step::Continue));
        assert_eq!(d.on(step(now + secs(59), true, false)), (d, Step::Continue));
        assert_eq!(d.on(step(now + secs(10), false, false)), (d, Step::Finish), "all delivered");
        assert!(!d.reads_input() && d.replays());
    }

    #[test]
    fn past_the_deadline_a_spool_without_records_in_flight_is_left_for_the_next_start() {
        let now = t0();
        let d = Phase::Draining { deadline: now };
        assert_eq!(d.on(step(now, false, true)), (d, Step::Finish));
        assert_eq!(d.on(step(now + secs(1), false, true)), (d, Step::Finish));
    }

    #[test]
    fn past_the_deadline_records_in_flight_purge_the_producer_once() {
        let now = t0();
        let d = Phase::Draining { deadline: now };
        assert_eq!(d.on(step(now, true, true)), (Phase::Purged, Step::Purge));
        assert_eq!(Phase::Purged.on(step(now + secs(1), true, true)), (Phase::Purged, Step::Continue), "not again");
        assert_eq!(Phase::Purged.on(step(now + secs(1), true, false)), (Phase::Purged, Step::Continue));
        assert!(!Phase::Purged.replays() && !Phase::Purged.reads_input());
    }

    #[test]
    fn purged_finishes_once_the_purged_reports_are_in_even_with_a_spool() {
        let now = t0();
        assert_eq!(Phase::Purged.on(step(now, false, true)), (Phase::Purged, Step::Finish));
        assert_eq!(Phase::Purged.on(step(now, false, false)), (Phase::Purged, Step::Finish));
    }

    #[test]
    fn a_second_close_changes_nothing() {
        let now = t0();
        for p in [Phase::Ended, Phase::Draining { deadline: now }, Phase::Purged] {
            assert_eq!(p.on(PhaseEvent::InputClosed), (p, Step::Continue));
        }
    }

    // ---- intake

    #[test]
    fn a_full_blocking_spool_pauses_the_input_once() {
        let now = t0();
        let (i, c) = Intake::Open.on(true, now);
        assert_eq!((i, c), (Intake::Paused { since: now }, Some(IntakeChange::Paused)));
        assert_eq!(i.on(true, now + secs(5)), (i, None), "still paused, since the first time");
    }

    #[test]
    fn the_input_resumes_below_the_cap_with_the_pause_start() {
        let now = t0();
        let (i, c) = Intake::Paused { since: now }.on(false, now + secs(7));
        assert_eq!((i, c), (Intake::Open, Some(IntakeChange::Resumed { since: now })));
        assert_eq!(Intake::Open.on(false, now), (Intake::Open, None));
    }

    #[test]
    fn only_a_full_spool_with_policy_block_blocks_and_not_while_shutting_down() {
        assert!(blocks_input(false, true, true));
        assert!(!blocks_input(true, true, true), "shutting down: the spool takes past its cap");
        assert!(!blocks_input(false, false, true), "drop_newest never blocks");
        assert!(!blocks_input(false, true, false));
    }

    // ---- the loop's decisions

    #[test]
    fn stalled_needs_a_spool_a_full_bound_and_a_quiet_broker() {
        let spill = Duration::from_millis(2000);
        assert!(stalled(true, true, || spill, spill));
        assert!(!stalled(true, true, || spill - Duration::from_millis(1), spill), "a report came lately");
        let unread = || -> Duration { unreachable!("the clock is not read") };
        assert!(!stalled(false, true, unread, spill), "no spool: backpressure only");
        assert!(!stalled(true, false, unread, spill), "room in flight");
    }

    #[test]
    fn input_is_read_below_the_bound_or_when_it_goes_to_disk() {
        let m = Mode::new();
        assert!(m.reads_input(true, false, false));
        assert!(m.reads_input(false, true, false), "spooling: to disk");
        assert!(m.reads_input(false, false, true), "stalled: spill");
        assert!(!m.reads_input(false, false, false), "backpressure");
    }

    #[test]
    fn no_input_is_read_while_paused_or_after_it_ended() {
        let now = t0();
        let paused = Mode { intake: Intake::Paused { since: now }, ..Mode::new() };
        assert!(!paused.reads_input(true, true, true));
        for phase in [Phase::Ended, Phase::Draining { deadline: now }, Phase::Purged] {
            assert!(!Mode { phase, ..Mode::new() }.reads_input(true, true, true), "{phase:?}");
        }
    }
}
