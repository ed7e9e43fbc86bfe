//! Logs and counters.
//!
//! Logs go to standard error only (standard output may carry the posts), as text
//! or JSON lines. Counters are plain atomics shared by every task; a reporter
//! logs one throughput line at INFO per period, and a summary at the end.
//! Nothing is logged per record above DEBUG, except the first few bad records,
//! which are logged at WARN with their location so a user can find them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::post::ControlKind;

/// Is the collector able to collect? Heartbeats are withheld while it is not
/// (no API key, credentials refused …) so operators and planners notice.
#[derive(Debug, Default)]
pub struct Health {
    unhealthy: std::sync::Mutex<Option<String>>,
}

impl Health {
    pub fn set_unhealthy(&self, reason: impl Into<String>) {
        if let Ok(mut u) = self.unhealthy.lock() {
            *u = Some(reason.into());
        }
    }
    pub fn set_healthy(&self) {
        if let Ok(mut u) = self.unhealthy.lock() {
            *u = None;
        }
    }
    /// `None` when healthy, else why not.
    pub fn problem(&self) -> Option<String> {
        self.unhealthy.lock().ok().and_then(|u| u.clone())
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Install the global subscriber: stderr, `RUST_LOG` or `default_level`.
pub fn init_logging(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let result = match format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => {
            let json = tracing_subscriber::fmt::format().json().flatten_event(true).with_current_span(false);
            builder.json().event_format(Tagged(json)).try_init()
        }
    };
    // A second initialisation (tests) keeps the first subscriber.
    let _ = result;
}

/// `"traptor_type":…,"traptor_id":…,` once the pipeline file is read.
static LOG_IDENTITY: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Tag every JSON log line from now on with the collector's identity (as the
/// original tagged its ELK records); every line carries `version` anyway.
pub fn tag_logs(who: crate::rules::Collector) {
    let _ = LOG_IDENTITY.set(format!("\"traptor_type\":\"{}\",\"traptor_id\":{},", who.rule_type, who.id));
}

/// The JSON event format with the identity and version spliced in first.
struct Tagged<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for Tagged<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, tracing_subscriber::fmt::format::Writer::new(&mut line), event)?;
        let identity = LOG_IDENTITY.get().map_or("", String::as_str);
        match line.strip_prefix('{') {
            Some(rest) => {
                write!(writer, "{{{identity}\"version\":\"{}\",{rest}", env!("CARGO_PKG_VERSION"))
            }
            None => writer.write_str(&line),
        }
    }
}

/// How many bad records are logged one by one before only the count grows.
pub const BAD_RECORDS_LOGGED: u64 = 20;

/// Pipeline counters. Names match the metric names of the admin endpoint.
/// Upper bounds of the end-to-end latency buckets, in microseconds (the
/// last is +Inf).
pub const E2E_BUCKETS_US: [u64; 28] = [
    50,
    100,
    150,
    200,
    300,
    400,
    500,
    750,
    1_000,
    1_500,
    2_000,
    3_000,
    5_000,
    7_500,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    300_000_000,
    u64::MAX,
];

/// A latency histogram of atomics: observed from any thread, read at scrape
/// time.
#[derive(Debug)]
pub struct Histogram {
    bounds_us: &'static [u64],
    counts: Vec<AtomicU64>,
    sum_us: AtomicU64,
    max_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::new(&E2E_BUCKETS_US)
    }
}

impl Histogram {
    pub fn new(bounds_us: &'static [u64]) -> Histogram {
        Histogram {
            bounds_us,
            counts: bounds_us.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }
    }

    /// `n` observations of `d` (a batch of records that waited as long).
    pub fn observe_n(&self, d: Duration, n: u64) {
        if n == 0 {
            return;
        }
        let us = d.as_micros().min(u128::from(u64::MAX / 1_000_000)) as u64;
        let i = self.bounds_us.iter().position(|&b| us <= b).unwrap_or(self.bounds_us.len() - 1);
        self.counts[i].fetch_add(n, Relaxed);
        self.sum_us.fetch_add(us.saturating_mul(n), Relaxed);
        self.max_us.fetch_max(us, Relaxed);
    }

    /// (upper bound in µs — `u64::MAX` for +Inf —, count) per bucket.
    pub fn buckets_us(&self) -> Vec<(u64, u64)> {
        self.bounds_us.iter().zip(&self.counts).map(|(b, n)| (*b, n.load(Relaxed))).collect()
    }

    pub fn sum_us(&self) -> u64 {
        self.sum_us.load(Relaxed)
    }

    /// The largest observation, in seconds.
    pub fn max_seconds(&self) -> f64 {
        self.max_us.load(Relaxed) as f64 / 1e6
    }

    /// (upper bound in seconds — `f64::MAX` for +Inf —, count) per bucket,
    /// and the sum in seconds.
    pub fn buckets_seconds(&self) -> (Vec<(f64, u64)>, f64) {
        let b = self
            .buckets_us()
            .into_iter()
            .map(|(b, n)| (if b == u64::MAX { f64::MAX } else { b as f64 / 1e6 }, n))
            .collect();
        (b, self.sum_us.load(Relaxed) as f64 / 1e6)
    }

    /// The smallest bucket bound below which a share `q` of the observations
    /// lie (an upper estimate of the quantile), in seconds; `None` if empty.
    pub fn quantile_upper(&self, q: f64) -> Option<f64> {
        let (buckets, _) = self.buckets_seconds();
        let total: u64 = buckets.iter().map(|(_, n)| n).sum();
        if total == 0 {
            return None;
        }
        let want = (q * total as f64).ceil() as u64;
        let mut seen = 0;
        buckets
            .iter()
            .find(|(_, n)| {
                seen += n;
                seen >= want
            })
            .map(|(b, _)| *b)
    }

    /// [`Histogram::quantile_upper`] in microseconds, capped at the largest
    /// observation (the +Inf bucket has no bound); 0 when empty.
    pub fn quantile_us(&self, q: f64) -> u64 {
        let max = self.max_us.load(Relaxed);
        self.quantile_upper(q).map_or(0, |s| if s >= f64::MAX { max } else { ((s * 1e6) as u64).min(max) })
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }
}

/// Counts of fields met in an unexpected JSON type, by (format, field).
/// Both are `&'static str` from the decoders' declarations: a bounded set.
/// Taken only for posts that had a surprise, so a lock is cheap enough.
#[derive(Debug, Default)]
pub struct FieldSurprises(std::sync::Mutex<std::collections::BTreeMap<(&'static str, &'static str), u64>>);

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
    pub fn snapshot(&self) -> std::collections::BTreeMap<&'static str, std::collections::BTreeMap<&'static str, u64>> {
        let mut out: std::collections::BTreeMap<_, std::collections::BTreeMap<_, _>> = Default::default();
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

#[derive(Debug, Default)]
pub struct Metrics {
    pub records_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub posts: AtomicU64,
    pub posts_matched: AtomicU64,
    pub posts_unmatched: AtomicU64,
    pub rule_matches: AtomicU64,
    pub control: [AtomicU64; ControlKind::ALL.len()],
    /// Twitter's cumulative count of posts it could not deliver (latest `limit`).
    pub limit_undelivered: AtomicU64,
    pub malformed: AtomicU64,
    /// Fields of posts read in an unexpected JSON type (converted or treated
    /// as absent; the post went on), by format and field.
    pub field_surprises: FieldSurprises,
    /// Records a live source dropped as redeliveries of ones already read.
    pub duplicates_dropped: AtomicU64,
    /// Attributions by the source (X v2 `matching_rules`) naming no local rule.
    pub source_rules_unresolved: AtomicU64,
    /// Rule attributions removed by a rule's `rate_limit` / `sample`.
    pub rule_limited: AtomicU64,
    pub rule_sampled_out: AtomicU64,
    /// `[dedup]` round trips to Redis that failed (the local check stood).
    pub dedup_redis_errors: AtomicU64,
    pub envelope_errors: AtomicU64,
    pub control_dropped: AtomicU64,
    pub records_out: AtomicU64,
    pub bytes_out: AtomicU64,
    pub dead_letters_out: AtomicU64,
    pub rule_reloads: AtomicU64,
    /// SIGHUPs that found a pipeline-file change only a restart applies.
    pub changes_needing_restart: AtomicU64,
    pub worker_panics: AtomicU64,
    /// Gauge: records waiting in the Kafka sink's spool.
    pub spool_backlog: AtomicU64,
    /// From a record's read by the source to its write by the sink (or the
    /// broker's confirmation).
    pub end_to_end: Histogram,
    /// Time to load and compile a new rule set.
    pub rules_reload: Histogram,
    /// From handing a record to the Kafka producer to its delivery report.
    pub kafka_delivery: Histogram,
    /// Gauge: bytes held by the Kafka sink's spool.
    pub spool_bytes: AtomicU64,
    /// Gauges of the buffer between sources and workers: records and bytes
    /// on disk (queued, or with the workers and not yet written), read time
    /// (µs since the epoch) of the oldest queued one (0: none).
    pub buffer_records: AtomicU64,
    pub buffer_bytes: AtomicU64,
    pub buffer_oldest_us: AtomicU64,
    /// Records the buffer put on disk and took back from it.
    pub buffer_to_disk: AtomicU64,
    pub buffer_from_disk: AtomicU64,
    /// Records dropped by a full buffer, by policy.
    pub buffer_dropped_oldest: AtomicU64,
    pub buffer_dropped_newest: AtomicU64,
    /// Times a full buffer (`block`) paused the sources.
    pub buffer_blocked: AtomicU64,
}

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Snapshot {
    pub records_in: u64,
    pub bytes_in: u64,
    pub posts: u64,
    pub posts_matched: u64,
    pub posts_unmatched: u64,
    pub rule_matches: u64,
    pub control: std::collections::BTreeMap<&'static str, u64>,
    pub limit_undelivered: u64,
    pub malformed: u64,
    /// format → field → posts that had it in an unexpected JSON type.
    pub field_surprises: std::collections::BTreeMap<&'static str, std::collections::BTreeMap<&'static str, u64>>,
    pub duplicates_dropped: u64,
    pub source_rules_unresolved: u64,
    pub rule_limited: u64,
    pub rule_sampled_out: u64,
    pub dedup_redis_errors: u64,
    pub envelope_errors: u64,
    pub control_dropped: u64,
    pub records_out: u64,
    pub bytes_out: u64,
    pub dead_letters_out: u64,
    pub rule_reloads: u64,
    pub changes_needing_restart: u64,
    pub worker_panics: u64,
    pub spool_backlog: u64,
    pub buffer_records: u64,
    pub buffer_bytes: u64,
    /// How far behind the oldest buffered record is, in ms (0: none buffered).
    pub buffer_behind_ms: u64,
    pub buffer_to_disk: u64,
    pub buffer_from_disk: u64,
    pub buffer_dropped_oldest: u64,
    pub buffer_dropped_newest: u64,
    pub buffer_blocked: u64,
    /// End-to-end latency: the bucket bounds under which half and 99 % of
    /// the records lie (upper estimates), and the largest, in microseconds.
    pub latency_p50_us: u64,
    pub latency_p99_us: u64,
    pub latency_max_us: u64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn control(&self, kind: ControlKind) {
        self.control[kind.index()].fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            records_in: self.records_in.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            posts: self.posts.load(Relaxed),
            posts_matched: self.posts_matched.load(Relaxed),
            posts_unmatched: self.posts_unmatched.load(Relaxed),
            rule_matches: self.rule_matches.load(Relaxed),
            control: ControlKind::ALL
                .iter()
                .map(|k| (k.as_str(), self.control[k.index()].load(Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            limit_undelivered: self.limit_undelivered.load(Relaxed),
            malformed: self.malformed.load(Relaxed),
            field_surprises: self.field_surprises.snapshot(),
            duplicates_dropped: self.duplicates_dropped.load(Relaxed),
            source_rules_unresolved: self.source_rules_unresolved.load(Relaxed),
            rule_limited: self.rule_limited.load(Relaxed),
            rule_sampled_out: self.rule_sampled_out.load(Relaxed),
            dedup_redis_errors: self.dedup_redis_errors.load(Relaxed),
            envelope_errors: self.envelope_errors.load(Relaxed),
            control_dropped: self.control_dropped.load(Relaxed),
            records_out: self.records_out.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            dead_letters_out: self.dead_letters_out.load(Relaxed),
            rule_reloads: self.rule_reloads.load(Relaxed),
            changes_needing_restart: self.changes_needing_restart.load(Relaxed),
            worker_panics: self.worker_panics.load(Relaxed),
            spool_backlog: self.spool_backlog.load(Relaxed),
            buffer_records: self.buffer_records.load(Relaxed),
            buffer_bytes: self.buffer_bytes.load(Relaxed),
            buffer_behind_ms: match self.buffer_oldest_us.load(Relaxed) {
                0 => 0,
                t => std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| (d.as_micros() as u64).saturating_sub(t) / 1000),
            },
            buffer_to_disk: self.buffer_to_disk.load(Relaxed),
            buffer_from_disk: self.buffer_from_disk.load(Relaxed),
            buffer_dropped_oldest: self.buffer_dropped_oldest.load(Relaxed),
            buffer_dropped_newest: self.buffer_dropped_newest.load(Relaxed),
            buffer_blocked: self.buffer_blocked.load(Relaxed),
            latency_p50_us: self.end_to_end.quantile_us(0.5),
            latency_p99_us: self.end_to_end.quantile_us(0.99),
            latency_max_us: self.end_to_end.max_us.load(Relaxed),
        }
    }
}

/// Log a throughput line every `period` until cancelled.
pub async fn report_periodically(metrics: std::sync::Arc<Metrics>, period: Duration, stop: CancellationToken) {
    if period.is_zero() {
        return;
    }
    let mut last = metrics.snapshot();
    let mut last_at = Instant::now();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = metrics.snapshot();
        let secs = last_at.elapsed().as_secs_f64().max(1e-9);
        tracing::info!(
            posts = now.posts,
            posts_per_sec = ((now.posts - last.posts) as f64 / secs).round() as u64,
            out_mib_per_sec = format!("{:.2}", (now.bytes_out - last.bytes_out) as f64 / secs / 1048576.0),
            matched = now.posts_matched,
            unmatched = now.posts_unmatched,
            malformed = now.malformed,
            duplicates = now.duplicates_dropped,
            spool_backlog = now.spool_backlog,
            buffered = now.buffer_records,
            buffered_mib = format!("{:.1}", now.buffer_bytes as f64 / 1048576.0),
            behind_secs = format!("{:.1}", now.buffer_behind_ms as f64 / 1e3),
            buffer_dropped = now.buffer_dropped_oldest + now.buffer_dropped_newest,
            "throughput"
        );
        last = now;
        last_at = Instant::now();
    }
}
