//! Logs and counters.
//!
//! Logs go to standard error only (standard output may carry the posts), as text
//! or JSON lines. Counters are plain atomics shared by every task; a reporter
//! logs one throughput line at INFO per period, and a summary at the end.
//! Each metric is declared once (`metrics!` below): its field, `/metrics`
//! family and summary keys come from that one line.
//! Nothing is logged per record above DEBUG, except the first few bad records,
//! which are logged at WARN with their location so a user can find them.

mod connection;
mod histogram;
mod metrics;
mod rule_hits;

pub use connection::ConnectionStats;
pub use histogram::{E2E_BUCKETS_US, Histogram, HistogramSnapshot};
pub use metrics::{
    Desc, FieldSurprises, Kind, Label, METRICS, Metrics, PerControlKind, ReadTime, Samples, Snapshot, Stat,
};
pub use rule_hits::{RuleHits, RuleWindow, now_slot};

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

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
static LOG_IDENTITY: std::sync::RwLock<String> = std::sync::RwLock::new(String::new());

/// Tag every JSON log line from now on with the collector's identity (as the
/// original tagged its ELK records); every line carries `version` anyway.
pub fn tag_logs(who: crate::rules::Collector) {
    if let Ok(mut id) = LOG_IDENTITY.write() {
        *id = format!("\"traptor_type\":\"{}\",\"traptor_id\":{},", who.rule_type, who.id);
    }
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
        let identity = LOG_IDENTITY.read().map(|s| s.clone()).unwrap_or_default();
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
            behind_secs = format!("{:.1}", (now.buffer_oldest_us / 1000) as f64 / 1e3),
            buffer_dropped = now.buffer_dropped_oldest + now.buffer_dropped_newest,
            "throughput"
        );
        last = now;
        last_at = Instant::now();
    }
}
