//! The metrics, each declared once (`metrics!`): its field in [`Metrics`],
//! its [`Snapshot`] field, its `/metrics` family and its keys in the run
//! summary all come from that one line.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering, Ordering::Relaxed};
use std::time::Duration;

use super::histogram::{Histogram, HistogramSnapshot};
use crate::post::ControlKind;

/// Counts of fields met in an unexpected JSON type, by (format, field).
/// Both are `&'static str` from the decoders' declarations: a bounded set.
/// Taken only for posts that had a surprise, so a lock is cheap enough.
#[derive(Debug, Default)]
pub struct FieldSurprises(std::sync::Mutex<BTreeMap<(&'static str, &'static str), u64>>);

impl FieldSurprises {
    /// Count `n` posts; true the first time this format and field is seen.
    pub fn add(&self, format: &'static str, field: &'static str, n: u64) -> bool {
        let Ok(mut m) = self.0.lock() else { return false };
        let count = m.entry((format, field)).or_insert(0);
        let first = *count == 0;
        *count += n;
        first
    }

    /// format → field → count.
    pub fn snapshot(&self) -> BTreeMap<&'static str, BTreeMap<&'static str, u64>> {
        let mut out: BTreeMap<_, BTreeMap<_, _>> = Default::default();
        if let Ok(m) = self.0.lock() {
            for (&(format, field), &n) in m.iter() {
                out.entry(format).or_default().insert(field, n);
            }
        }
        out
    }

    /// Every count, summed.
    pub fn total(&self) -> u64 {
        self.0.lock().map_or(0, |m| m.values().sum())
    }
}

/// Control messages read, one counter per [`ControlKind`].
#[derive(Debug)]
pub struct PerControlKind([AtomicU64; ControlKind::ALL.len()]);

impl Default for PerControlKind {
    fn default() -> PerControlKind {
        PerControlKind(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl PerControlKind {
    pub fn add(&self, kind: ControlKind, n: u64) {
        self.0[kind.index()].fetch_add(n, Relaxed);
    }
}

/// A read time in µs since the epoch (0: none), stored as the sources and
/// the buffer see it and read as an age: a [`Snapshot`] holds how many µs
/// ago it was (0: none), `/metrics` whole seconds.
#[derive(Debug, Default)]
pub struct ReadTime(AtomicU64);

impl ReadTime {
    pub fn store(&self, us_since_epoch: u64, order: Ordering) {
        self.0.store(us_since_epoch, order);
    }

    pub fn load(&self, order: Ordering) -> u64 {
        self.0.load(order)
    }
}

/// Prometheus type of a declared metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    /// No samples of its own: the sum of the family of the same name,
    /// declared by other fields (`posts` is `traptor_posts{result}` summed).
    SumOf,
}

/// The value of a declared label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    Fixed(&'static str),
    /// The source's name (as `/metrics` knows it).
    Source,
    /// The sink's name.
    Sink,
}

/// One declared metric: a field of [`Metrics`] and [`Snapshot`], its
/// `/metrics` family and its keys in the run summary.
#[derive(Debug)]
pub struct Desc {
    pub field: &'static str,
    /// Family name, without `_total` (the encoder adds it to counters).
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    /// Labels of its samples, before those the value brings (a
    /// [`Samples::Labelled`] row's).
    pub labels: &'static [(&'static str, Label)],
    /// Keys of the run summary that show it.
    pub summary: &'static [&'static str],
}

/// A declared metric's `/metrics` samples.
#[derive(Debug)]
pub enum Samples<'a> {
    /// One value under the declaration's labels.
    One(u64),
    /// Values under labels of their own, after the declaration's; none: the
    /// family is left out.
    Labelled(Vec<(Vec<(&'static str, &'static str)>, u64)>),
    Histogram(&'a HistogramSnapshot),
}

/// What each kind of storage in [`Metrics`] gives a [`Snapshot`], `/metrics`
/// and the run summary.
pub trait Stat {
    type Snap: Clone + Default + PartialEq + Eq + std::fmt::Debug + serde::Serialize;
    fn snap(&self) -> Self::Snap;
    fn samples(snap: &Self::Snap) -> Samples<'_>;
    /// The summary's value when the declaration names no function.
    fn summary(snap: &Self::Snap) -> u64;
}

impl Stat for AtomicU64 {
    type Snap = u64;
    fn snap(&self) -> u64 {
        self.load(Relaxed)
    }
    fn samples(snap: &u64) -> Samples<'_> {
        Samples::One(*snap)
    }
    fn summary(snap: &u64) -> u64 {
        *snap
    }
}

impl Stat for ReadTime {
    /// µs since the read time (0: none).
    type Snap = u64;
    fn snap(&self) -> u64 {
        match self.0.load(Relaxed) {
            0 => 0,
            t => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| (d.as_micros() as u64).saturating_sub(t)),
        }
    }
    fn samples(snap: &u64) -> Samples<'_> {
        // Whole seconds, from whole milliseconds as before.
        Samples::One(snap / 1000 / 1000)
    }
    fn summary(snap: &u64) -> u64 {
        *snap
    }
}

impl Stat for PerControlKind {
    /// Kind → count, kinds never seen left out.
    type Snap = BTreeMap<&'static str, u64>;
    fn snap(&self) -> Self::Snap {
        ControlKind::ALL.iter().map(|k| (k.as_str(), self.0[k.index()].load(Relaxed))).filter(|(_, n)| *n > 0).collect()
    }
    /// Every kind, 0 included.
    fn samples(snap: &Self::Snap) -> Samples<'_> {
        Samples::Labelled(
            ControlKind::ALL
                .iter()
                .map(|k| (vec![("kind", k.as_str())], snap.get(k.as_str()).copied().unwrap_or(0)))
                .collect(),
        )
    }
    fn summary(snap: &Self::Snap) -> u64 {
        snap.values().sum()
    }
}

impl Stat for FieldSurprises {
    /// format → field → posts that had it in an unexpected JSON type.
    type Snap = BTreeMap<&'static str, BTreeMap<&'static str, u64>>;
    fn snap(&self) -> Self::Snap {
        self.snapshot()
    }
    fn samples(snap: &Self::Snap) -> Samples<'_> {
        Samples::Labelled(
            snap.iter()
                .flat_map(|(format, fields)| {
                    fields.iter().map(move |(field, n)| (vec![("format", *format), ("field", *field)], *n))
                })
                .collect(),
        )
    }
    fn summary(snap: &Self::Snap) -> u64 {
        snap.values().flat_map(|f| f.values()).sum()
    }
}

impl Stat for Histogram {
    type Snap = HistogramSnapshot;
    fn snap(&self) -> HistogramSnapshot {
        self.snapshot()
    }
    fn samples(snap: &HistogramSnapshot) -> Samples<'_> {
        Samples::Histogram(snap)
    }
    fn summary(snap: &HistogramSnapshot) -> u64 {
        snap.count()
    }
}

// Summary values other than the plain count: `fn(&Snap, seconds of the run)`.

fn per_sec(n: &u64, secs: f64) -> u64 {
    (*n as f64 / secs).round() as u64
}

fn mib_per_sec(n: &u64, secs: f64) -> String {
    format!("{:.1}", *n as f64 / secs / 1_048_576.0)
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1e3)
}

fn p50_ms(h: &HistogramSnapshot, _: f64) -> String {
    ms(h.quantile_us(0.5))
}

fn p99_ms(h: &HistogramSnapshot, _: f64) -> String {
    ms(h.quantile_us(0.99))
}

fn max_ms(h: &HistogramSnapshot, _: f64) -> String {
    ms(h.max_us)
}

fn behind_ms(age_us: &u64, _: f64) -> u64 {
    age_us / 1000
}

/// One summary value: the [`Stat`]'s own, or the declaration's function.
macro_rules! summary_value {
    ($v:expr, $secs:expr, $ty:ty) => {
        <$ty as Stat>::summary($v)
    };
    ($v:expr, $secs:expr, $ty:ty, $show:expr) => {
        ($show)($v, $secs)
    };
}

/// Declares the metrics: one line each,
///
/// ```text
/// /// doc
/// field: Storage => Kind("family", labels, "help"), summary(key, key = function, …);
/// ```
///
/// and from it [`Metrics`] (the field), [`Snapshot`] (the field, read),
/// [`Metrics::snapshot`], [`METRICS`] (what `/metrics` and the tests go by),
/// [`Snapshot::samples`] (what `/metrics` encodes) and
/// [`Snapshot::log_summary`] (the run summary line). `Storage` implements
/// [`Stat`]; fields of one labelled family are declared one after the other
/// with the same kind and help (`declarations_are_consistent` checks).
macro_rules! metrics {
    ($(
        $(#[$attr:meta])*
        $field:ident: $ty:ty => $kind:ident($name:literal, $labels:expr, $help:expr),
            summary($($key:ident $(= $show:expr)?),+);
    )*) => {
        /// Pipeline counters, shared by every task (declared with `metrics!`).
        #[derive(Debug, Default)]
        pub struct Metrics {
            $( $(#[$attr])* pub $field: $ty, )*
        }

        /// A point-in-time copy of the counters.
        #[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
        pub struct Snapshot {
            $(
                #[doc = concat!("[`Metrics::", stringify!($field), "`], read.")]
                pub $field: <$ty as Stat>::Snap,
            )*
        }

        /// Every declared metric, in declaration order.
        pub const METRICS: &[Desc] = &[$(
            Desc {
                field: stringify!($field),
                name: $name,
                kind: Kind::$kind,
                help: $help,
                labels: $labels,
                summary: &[$(stringify!($key)),+],
            },
        )*];

        impl Metrics {
            pub fn snapshot(&self) -> Snapshot {
                Snapshot { $( $field: Stat::snap(&self.$field), )* }
            }
        }

        impl Snapshot {
            /// Each declared metric with its samples, in declaration order.
            pub fn samples(&self) -> impl Iterator<Item = (&'static Desc, Samples<'_>)> {
                METRICS.iter().zip([$( <$ty as Stat>::samples(&self.$field) ),*])
            }

            /// The end-of-run summary line: every declared metric's keys,
            /// then the run's length.
            pub fn log_summary(&self, elapsed: Duration) {
                let secs = elapsed.as_secs_f64().max(1e-9);
                // The target it was logged under before (JSON lines carry it).
                tracing::info!(
                    target: "traptor_host::app",
                    $($( $key = summary_value!(&self.$field, secs, $ty $(, $show)?), )+)*
                    seconds = format!("{secs:.2}"),
                    "pipeline finished"
                );
            }
        }
    };
}

/// Help of the families several fields share.
const POSTS_HELP: &str = "Posts that went through matching, by result (their sum is every post)";
const RULE_REMOVED_HELP: &str = "Rule attributions removed by a rule's rate_limit or sample, by reason";
const BUFFER_MOVED_HELP: &str = "Records the buffer put on disk and took back";
const BUFFER_DROPPED_HELP: &str = "Records a full buffer dropped, by overflow policy";
const FLEET_IDS_HELP: &str =
    "Ids of this collector's type with rules in Redis, held by a collector or free (id = \"auto\"; counted by holders)";

const NONE: &[(&str, Label)] = &[];
const SOURCE: &[(&str, Label)] = &[("source", Label::Source)];
const SINK: &[(&str, Label)] = &[("sink", Label::Sink)];

metrics! {
    /// Records read from the source: posts, control messages, malformed.
    records_in: AtomicU64 => Counter("traptor_source_records", SOURCE,
        "Records read from the source (posts, control messages and malformed records)"),
        summary(records);
    posts: AtomicU64 => SumOf("traptor_posts", NONE, POSTS_HELP), summary(posts, posts_per_sec = per_sec);
    posts_matched: AtomicU64 => Counter("traptor_posts", &[("result", Label::Fixed("matched"))], POSTS_HELP),
        summary(matched);
    posts_unmatched: AtomicU64 => Counter("traptor_posts", &[("result", Label::Fixed("unmatched"))], POSTS_HELP),
        summary(unmatched);
    /// Posts in a polygon rule's envelope or covering boxes (what the API was
    /// asked for) but outside the polygon: not attributed to that rule.
    posts_outside_polygon: AtomicU64 => Counter("traptor_posts_outside_polygon", NONE,
        "Posts inside a polygon rule's covering boxes but outside the polygon, so not attributed to it"),
        summary(outside_polygon);
    /// Rule attributions (a post matching three rules counts three).
    rule_matches: AtomicU64 => Counter("traptor_rule_matches", NONE,
        "Rule attributions made (a post matching three rules counts three)"),
        summary(rule_matches);
    /// Control messages (not posts) read, by kind.
    control: PerControlKind => Counter("traptor_records", NONE, "Control messages (not posts) read, by kind"),
        summary(control);
    /// Twitter's cumulative count of posts it could not deliver (latest `limit`).
    limit_undelivered: AtomicU64 => Counter("traptor_source_undelivered", SOURCE,
        "Posts the source said it could not deliver (the largest count of its limit notices)"),
        summary(limit_undelivered);
    /// Control messages read and not forwarded (`forward_control` off).
    control_dropped: AtomicU64 => Counter("traptor_control_dropped", NONE,
        "Control messages read and not forwarded to the sink"),
        summary(control_dropped);
    malformed: AtomicU64 => Counter("traptor_malformed", NONE, "Records that could not be decoded"),
        summary(malformed);
    /// Fields of posts read in an unexpected JSON type (converted or treated
    /// as absent; the post went on), by format and field.
    field_surprises: FieldSurprises => Counter("traptor_field_surprises", NONE,
        "Post fields read in an unexpected JSON type (converted, or treated as absent); the posts went on"),
        summary(field_surprises);
    /// Records a live source dropped as redeliveries of ones already read.
    duplicates_dropped: AtomicU64 => Counter("traptor_duplicates_dropped", SOURCE,
        "Redeliveries a live source dropped"),
        summary(duplicates);
    /// `id = "auto"`: ids of the type with rules, held or free (the holder
    /// of an id counts them every 10 s), and the fencing number of its lease.
    fleet_ids_held: AtomicU64 => Gauge("traptor_fleet_ids", &[("state", Label::Fixed("held"))], FLEET_IDS_HELP),
        summary(fleet_ids_held);
    fleet_ids_free: AtomicU64 => Gauge("traptor_fleet_ids", &[("state", Label::Fixed("free"))], FLEET_IDS_HELP),
        summary(fleet_ids_free);
    lease_fence: AtomicU64 => Gauge("traptor_lease_fence", NONE,
        "Fencing number of the lease holding this collector's id (id = \"auto\"; grows with every claim)"),
        summary(lease_fence);
    /// The last interruption a live source asked to be filled: seconds from
    /// its last confirmed position to the reconnect.
    gap_seconds: AtomicU64 => Gauge("traptor_gap_seconds", SOURCE,
        "Length of the last interruption a live source asked to fill (last confirmed position to reconnect)"),
        summary(gap_secs);
    /// Posts received from before a reconnect (X v2 backfill, a Jetstream cursor rewound).
    gap_filled_posts: AtomicU64 => Counter("traptor_gap_filled_posts", SOURCE,
        "Posts a live source received from before its reconnect (backfill, cursor rewound)"),
        summary(gap_filled);
    /// Attributions by the source (X v2 `matching_rules`) naming no local rule.
    source_rules_unresolved: AtomicU64 => Counter("traptor_source_rules_unresolved", SOURCE,
        "Rule attributions by the source (X v2 matching_rules) naming no local rule"),
        summary(unresolved_rules);
    /// Rule attributions removed by a rule's `rate_limit` / `sample`.
    rule_limited: AtomicU64 => Counter("traptor_rule_attributions_removed",
        &[("reason", Label::Fixed("rate_limit"))], RULE_REMOVED_HELP),
        summary(rule_limited);
    rule_sampled_out: AtomicU64 => Counter("traptor_rule_attributions_removed",
        &[("reason", Label::Fixed("sample"))], RULE_REMOVED_HELP),
        summary(rule_sampled_out);
    /// `[dedup]` round trips to Redis that failed (the local check stood).
    dedup_redis_errors: AtomicU64 => Counter("traptor_dedup_redis_errors", NONE,
        "[dedup] round trips to Redis that failed (the local check stood)"),
        summary(dedup_redis_errors);
    /// Posts whose output record could not be written (skipped).
    envelope_errors: AtomicU64 => Counter("traptor_envelope_errors", NONE,
        "Posts skipped because their output record could not be built"),
        summary(envelope_errors);
    /// Batches a worker lost to a panic.
    worker_panics: AtomicU64 => Counter("traptor_worker_panics", NONE,
        "Batches lost to an internal error in a worker"),
        summary(worker_panics);
    /// Records the buffer put on disk and took back from it.
    buffer_to_disk: AtomicU64 => Counter("traptor_buffer_moved_records",
        &[("direction", Label::Fixed("to_disk"))], BUFFER_MOVED_HELP),
        summary(buffer_to_disk);
    buffer_from_disk: AtomicU64 => Counter("traptor_buffer_moved_records",
        &[("direction", Label::Fixed("from_disk"))], BUFFER_MOVED_HELP),
        summary(buffer_from_disk);
    /// Records dropped by a full buffer, by policy.
    buffer_dropped_oldest: AtomicU64 => Counter("traptor_buffer_dropped_records",
        &[("policy", Label::Fixed("drop_oldest"))], BUFFER_DROPPED_HELP),
        summary(buffer_dropped_oldest);
    buffer_dropped_newest: AtomicU64 => Counter("traptor_buffer_dropped_records",
        &[("policy", Label::Fixed("drop_newest"))], BUFFER_DROPPED_HELP),
        summary(buffer_dropped_newest);
    /// Times a full buffer (`block`) paused the sources.
    buffer_blocked: AtomicU64 => Counter("traptor_buffer_blocked", NONE,
        "Times a full buffer (overflow = block) paused the sources"),
        summary(buffer_blocked);
    /// Gauges of the buffer between sources and workers: records and bytes
    /// on disk (queued, or with the workers and not yet written), read time
    /// of the oldest queued one.
    buffer_records: AtomicU64 => Gauge("traptor_buffer_records", NONE, "Records waiting in the buffer's disk queue"),
        summary(buffered);
    buffer_bytes: AtomicU64 => Gauge("traptor_buffer_bytes", NONE, "Bytes waiting in the buffer's disk queue"),
        summary(buffer_bytes);
    buffer_oldest_us: ReadTime => Gauge("traptor_buffer_behind_seconds", NONE,
        "Age of the oldest record in the buffer's disk queue (how far behind real time)"),
        summary(buffer_behind_ms = behind_ms);
    records_out: AtomicU64 => Counter("traptor_sink_records", SINK, "Records the sink wrote (or the broker confirmed)"),
        summary(written);
    dead_letters_out: AtomicU64 => Counter("traptor_sink_dead_letters", SINK,
        "Records the sink wrote to its dead-letter output"),
        summary(dead_letters);
    /// Records the broker refused for good (too large, invalid).
    sink_refused: AtomicU64 => Counter("traptor_sink_refused", SINK,
        "Records the broker refused for good (too large, invalid): to the dead-letter topic, else the dead-letter file"),
        summary(sink_refused);
    /// Gauge: records waiting in the Kafka sink's spool.
    spool_backlog: AtomicU64 => Gauge("traptor_spool_records", NONE, "Records waiting in the Kafka spool"),
        summary(spool_backlog);
    /// Gauge: bytes held by the Kafka sink's spool.
    spool_bytes: AtomicU64 => Gauge("traptor_spool_bytes", NONE, "Bytes held by the Kafka spool"),
        summary(spool_bytes);
    /// From handing a record to the Kafka producer to its delivery report.
    kafka_delivery: Histogram => Histogram("traptor_kafka_delivery_duration_seconds", NONE,
        "From handing a record to the Kafka producer to the broker's confirmation"),
        summary(kafka_delivery_p99_ms = p99_ms);
    rule_reloads: AtomicU64 => Counter("traptor_rules_reloads", NONE, "Times a new rule set was swapped in"),
        summary(rule_reloads);
    /// Time to load and compile a new rule set.
    rules_reload: Histogram => Histogram("traptor_rules_reload_duration_seconds", NONE,
        "Time to compile a new rule set and swap it in"),
        summary(rules_reload_max_ms = max_ms);
    /// SIGHUPs that found a pipeline-file change only a restart applies.
    changes_needing_restart: AtomicU64 => Counter("traptor_changes_needing_restart", NONE,
        "SIGHUPs that found a pipeline-file change only a restart applies"),
        summary(changes_needing_restart);
    /// From a record's read by the source to its write by the sink (or the
    /// broker's confirmation).
    end_to_end: Histogram => Histogram("traptor_end_to_end_latency_seconds", NONE,
        "From a record's read by the source to its write by the sink (or the broker's confirmation)"),
        summary(latency_p50_ms = p50_ms, latency_p99_ms = p99_ms, latency_max_ms = max_ms);
    bytes_in: AtomicU64 => Counter("traptor_source_bytes", SOURCE, "Bytes read from the source"),
        summary(in_mib_per_sec = mib_per_sec);
    bytes_out: AtomicU64 => Counter("traptor_sink_bytes", SINK,
        "Bytes of the records the sink wrote (or the broker confirmed)"),
        summary(out_mib_per_sec = mib_per_sec);
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn control(&self, kind: ControlKind) {
        self.control.add(kind, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The summary's keys before the metrics were declared (the integration
    /// tests and the README read them), `seconds` aside.
    const SUMMARY_KEYS_BEFORE: [&str; 23] = [
        "records",
        "posts",
        "matched",
        "unmatched",
        "control",
        "malformed",
        "field_surprises",
        "duplicates",
        "unresolved_rules",
        "rule_limited",
        "rule_sampled_out",
        "dedup_redis_errors",
        "buffer_to_disk",
        "buffer_dropped_oldest",
        "buffer_dropped_newest",
        "buffered",
        "written",
        "posts_per_sec",
        "in_mib_per_sec",
        "out_mib_per_sec",
        "latency_p50_ms",
        "latency_p99_ms",
        "latency_max_ms",
    ];

    #[test]
    fn declarations_are_consistent() {
        let mut fields = std::collections::HashSet::new();
        let mut keys = std::collections::HashSet::new();
        for d in METRICS {
            assert!(fields.insert(d.field), "{} declared twice", d.field);
            assert!(d.name.starts_with("traptor_") && !d.name.ends_with("_total"), "{}: {}", d.field, d.name);
            assert!(!d.help.is_empty(), "{}", d.field);
            for k in d.summary {
                assert!(keys.insert(*k), "summary key {k} twice");
            }
        }
        assert!(!keys.contains("seconds"), "the run's length is the summary's own");
        // The integration tests find these in the summary line by substring.
        for k in &keys {
            for read in ["seconds", "written", "duplicates", "records"] {
                assert!(*k == read || !k.ends_with(read), "{k}= would be read as {read}=");
            }
        }
        // A family's fields one after the other, with one kind and one help.
        let exported: Vec<&Desc> = METRICS.iter().filter(|d| d.kind != Kind::SumOf).collect();
        for (i, d) in exported.iter().enumerate() {
            match i.checked_sub(1).map(|j| exported[j]) {
                Some(prev) if prev.name == d.name => {
                    assert_eq!((prev.kind, prev.help), (d.kind, d.help), "{}: one family, one kind and help", d.field);
                    let keys = |d: &Desc| d.labels.iter().map(|(k, _)| *k).collect::<Vec<_>>();
                    assert_eq!(keys(prev), keys(d), "{}: one family, one label set", d.field);
                }
                _ => {
                    assert!(exported[..i].iter().all(|e| e.name != d.name), "{}: declare its family together", d.field)
                }
            }
        }
        for d in METRICS.iter().filter(|d| d.kind == Kind::SumOf) {
            assert!(exported.iter().any(|e| e.name == d.name), "{} sums {}, which nothing declares", d.field, d.name);
        }
        for key in SUMMARY_KEYS_BEFORE {
            assert!(keys.contains(key), "the summary lost {key}");
        }
    }

    /// Collects what a subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut v) = self.0.lock() {
                v.extend_from_slice(b);
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for Captured {
        type Writer = Captured;
        fn make_writer(&'w self) -> Captured {
            self.clone()
        }
    }

    /// The summary line `s` logs, in the text format.
    fn summary_line(s: &Snapshot, elapsed: Duration) -> String {
        let out = Captured::default();
        let subscriber =
            tracing_subscriber::fmt().with_writer(out.clone()).with_ansi(false).with_target(false).finish();
        tracing::subscriber::with_default(subscriber, || s.log_summary(elapsed));
        let text = out.0.lock().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        text.lines().find(|l| l.contains("pipeline finished")).unwrap_or_default().to_owned()
    }

    /// Issue 24, point 2: every declared metric is in the run summary,
    /// under each of its keys, and the keys read before are still there.
    #[test]
    fn every_declared_metric_is_in_the_summary() {
        let m = Metrics::default();
        Metrics::add(&m.records_in, 5);
        Metrics::add(&m.posts, 4);
        Metrics::add(&m.posts_matched, 3);
        Metrics::add(&m.posts_unmatched, 1);
        m.control(ControlKind::Delete);
        m.field_surprises.add("twitter_v1", "id", 2);
        Metrics::add(&m.records_out, 4);
        m.end_to_end.observe_n(Duration::from_micros(140), 4);
        let line = summary_line(&m.snapshot(), Duration::from_secs(2));
        assert!(!line.is_empty(), "no summary line");
        for d in METRICS {
            for key in d.summary {
                assert!(line.contains(&format!(" {key}=")), "{}: no {key}= in {line}", d.field);
            }
        }
        for key in SUMMARY_KEYS_BEFORE.iter().chain(&["seconds"]) {
            assert!(line.contains(&format!(" {key}=")), "no {key}= in {line}");
        }
        for kv in [
            " records=5 ",
            " posts=4 ",
            " posts_per_sec=2 ",
            " matched=3 ",
            " unmatched=1 ",
            " control=1 ",
            " field_surprises=2 ",
            " written=4 ",
            " latency_p50_ms=\"0.14\" ",
            " seconds=\"2.00\"",
        ] {
            assert!(line.contains(kv), "no{kv}in {line}");
        }
    }

    #[test]
    fn histogram_snapshot_reads_as_the_histogram() {
        let h = Histogram::default();
        h.observe_n(Duration::from_micros(140), 98);
        h.observe_n(Duration::from_millis(2), 2);
        let s = h.snapshot();
        assert_eq!((s.count(), s.max_us, s.sum_us), (100, 2_000, 98 * 140 + 2 * 2_000));
        assert_eq!(h.buckets_seconds(), s.buckets_seconds());
        for q in [0.5, 0.9, 0.99, 1.0] {
            assert_eq!(h.quantile_upper(q), s.quantile_upper(q));
            assert!(s.quantile_us(q) <= s.max_us);
        }
        assert!(s.quantile_us(0.5) < 200 && s.quantile_us(0.99) > 1_000, "{s:?}");
        let m = Metrics::default();
        assert_eq!(m.snapshot().end_to_end.quantile_us(0.5), 0, "empty");
    }
}
