//! A latency histogram of atomics (end to end, rule reloads, Kafka
//! deliveries, stage batches).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

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

    /// The buckets, sum and largest observation, read now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot { buckets_us: self.buckets_us(), sum_us: self.sum_us(), max_us: self.max_us.load(Relaxed) }
    }

    /// See [`HistogramSnapshot::buckets_seconds`].
    pub fn buckets_seconds(&self) -> (Vec<(f64, u64)>, f64) {
        self.snapshot().buckets_seconds()
    }

    /// See [`HistogramSnapshot::quantile_upper`].
    pub fn quantile_upper(&self, q: f64) -> Option<f64> {
        self.snapshot().quantile_upper(q)
    }

    /// See [`HistogramSnapshot::quantile_us`].
    pub fn quantile_us(&self, q: f64) -> u64 {
        self.snapshot().quantile_us(q)
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }
}

/// A [`Histogram`] read at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct HistogramSnapshot {
    /// (upper bound in µs — `u64::MAX` for +Inf —, count) per bucket.
    pub buckets_us: Vec<(u64, u64)>,
    pub sum_us: u64,
    /// The largest observation, in µs.
    pub max_us: u64,
}

impl HistogramSnapshot {
    /// Observations in all buckets.
    pub fn count(&self) -> u64 {
        self.buckets_us.iter().map(|(_, n)| n).sum()
    }

    /// (upper bound in seconds — `f64::MAX` for +Inf —, count) per bucket,
    /// and the sum in seconds.
    pub fn buckets_seconds(&self) -> (Vec<(f64, u64)>, f64) {
        let b =
            self.buckets_us.iter().map(|&(b, n)| (if b == u64::MAX { f64::MAX } else { b as f64 / 1e6 }, n)).collect();
        (b, self.sum_us as f64 / 1e6)
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

    /// [`HistogramSnapshot::quantile_upper`] in microseconds, capped at the
    /// largest observation (the +Inf bucket has no bound); 0 when empty.
    pub fn quantile_us(&self, q: f64) -> u64 {
        let max = self.max_us;
        self.quantile_upper(q).map_or(0, |s| if s >= f64::MAX { max } else { ((s * 1e6) as u64).min(max) })
    }
}
