//! Per-stage counters and the batch-latency histogram.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::telemetry::Histogram;

/// Upper bounds of the latency buckets, in microseconds (the last is +inf).
pub const LATENCY_BUCKETS_US: [u64; 12] =
    [50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, u64::MAX];

/// Counters of one stage, shared by every worker.
#[derive(Debug, Default)]
pub struct StageMetrics {
    pub batches: AtomicU64,
    pub posts_in: AtomicU64,
    pub kept: AtomicU64,
    pub enriched: AtomicU64,
    pub dropped: AtomicU64,
    /// Posts the plugin answered with an error outcome.
    pub post_errors: AtomicU64,
    pub traps: AtomicU64,
    pub timeouts: AtomicU64,
    pub out_of_memory: AtomicU64,
    /// Batches the plugin answered with the wrong number of outcomes or bad JSON.
    pub protocol_errors: AtomicU64,
    pub instantiations: AtomicU64,
    pub circuit_opened: AtomicU64,
    /// Posts that went on without this stage (`on_error = "skip"`, open circuit).
    pub skipped: AtomicU64,
    /// Posts dropped by the `on_error = "drop"` policy.
    pub error_dropped: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Time per batch.
    pub latency: BatchLatency,
    /// Time per post (a batch's time over its posts).
    pub per_post: PostCost,
    /// Where the stage's time went, summed over its calls (ns).
    pub prepare_ns: AtomicU64,
    pub lower_ns: AtomicU64,
    pub guest_ns: AtomicU64,
    pub lift_ns: AtomicU64,
    plugin: Mutex<BTreeMap<String, u64>>,
}

/// A stage's time per batch, in the stage buckets.
#[derive(Debug)]
pub struct BatchLatency(pub Histogram);

impl Default for BatchLatency {
    fn default() -> BatchLatency {
        BatchLatency(Histogram::new(&LATENCY_BUCKETS_US))
    }
}

/// Upper bounds of the per-post cost buckets, in nanoseconds (the last is +Inf).
pub const POST_COST_BUCKETS_NS: [u64; 14] =
    [250, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000, 1_000_000, 10_000_000, u64::MAX];

/// What a stage costs per post: each batch adds its posts to the bucket of
/// its time divided by its posts.
#[derive(Debug)]
pub struct PostCost {
    counts: Vec<AtomicU64>,
    sum_ns: AtomicU64,
}

impl Default for PostCost {
    fn default() -> PostCost {
        PostCost { counts: POST_COST_BUCKETS_NS.iter().map(|_| AtomicU64::new(0)).collect(), sum_ns: AtomicU64::new(0) }
    }
}

impl PostCost {
    pub fn observe(&self, batch: Duration, posts: usize) {
        if posts == 0 {
            return;
        }
        let total = batch.as_nanos().min(u128::from(u64::MAX)) as u64;
        let each = total / posts as u64;
        let i = POST_COST_BUCKETS_NS.iter().position(|&b| each <= b).unwrap_or(POST_COST_BUCKETS_NS.len() - 1);
        self.counts[i].fetch_add(posts as u64, Relaxed);
        self.sum_ns.fetch_add(total, Relaxed);
    }

    /// (upper bound in seconds — +Inf last —, posts) per bucket, and the sum in seconds.
    pub fn buckets_seconds(&self) -> (Vec<(f64, u64)>, f64) {
        let buckets = POST_COST_BUCKETS_NS
            .iter()
            .zip(&self.counts)
            .map(|(&b, n)| (if b == u64::MAX { f64::INFINITY } else { b as f64 / 1e9 }, n.load(Relaxed)))
            .collect();
        (buckets, self.sum_ns.load(Relaxed) as f64 / 1e9)
    }
}

/// A copy of a stage's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StageSnapshot {
    pub batches: u64,
    pub posts_in: u64,
    pub kept: u64,
    pub enriched: u64,
    pub dropped: u64,
    pub post_errors: u64,
    pub traps: u64,
    pub timeouts: u64,
    pub out_of_memory: u64,
    pub protocol_errors: u64,
    pub instantiations: u64,
    pub circuit_opened: u64,
    pub skipped: u64,
    pub error_dropped: u64,
    pub dead_lettered: u64,
    /// (upper bound µs, batches) for every non-empty bucket.
    pub latency_us: Vec<(u64, u64)>,
    pub latency_sum_us: u64,
    /// Where the stage's time went (ns, summed): building the batch, copying
    /// it into the guest, the guest's own code, reading the answers back.
    pub prepare_ns: u64,
    pub lower_ns: u64,
    pub guest_ns: u64,
    pub lift_ns: u64,
    /// Counters the plugin bumped through the `counter` import.
    pub plugin: BTreeMap<String, u64>,
}

impl StageMetrics {
    pub fn observe_latency(&self, d: Duration) {
        self.latency.0.observe_n(d, 1);
    }

    /// One call of `posts` posts took `d`, split as `parts` when known.
    pub fn observe_call(&self, d: Duration, posts: usize, parts: Option<super::stage::Parts>) {
        self.latency.0.observe_n(d, 1);
        self.per_post.observe(d, posts);
        if let Some(p) = parts {
            self.prepare_ns.fetch_add(p.prepare, Relaxed);
            self.lower_ns.fetch_add(p.lower, Relaxed);
            self.guest_ns.fetch_add(p.guest, Relaxed);
            self.lift_ns.fetch_add(p.lift, Relaxed);
        }
    }

    pub fn plugin_counter(&self, name: &str, delta: u64) {
        if let Ok(mut m) = self.plugin.lock() {
            // Bounded: a plugin inventing names per post cannot grow this forever.
            if m.len() < 64 || m.contains_key(name) {
                *m.entry(name.to_owned()).or_default() += delta;
            }
        }
    }

    pub fn snapshot(&self) -> StageSnapshot {
        StageSnapshot {
            batches: self.batches.load(Relaxed),
            posts_in: self.posts_in.load(Relaxed),
            kept: self.kept.load(Relaxed),
            enriched: self.enriched.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            post_errors: self.post_errors.load(Relaxed),
            traps: self.traps.load(Relaxed),
            timeouts: self.timeouts.load(Relaxed),
            out_of_memory: self.out_of_memory.load(Relaxed),
            protocol_errors: self.protocol_errors.load(Relaxed),
            instantiations: self.instantiations.load(Relaxed),
            circuit_opened: self.circuit_opened.load(Relaxed),
            skipped: self.skipped.load(Relaxed),
            error_dropped: self.error_dropped.load(Relaxed),
            dead_lettered: self.dead_lettered.load(Relaxed),
            latency_us: self.latency.0.buckets_us().into_iter().filter(|(_, n)| *n > 0).collect(),
            latency_sum_us: self.latency.0.sum_us(),
            prepare_ns: self.prepare_ns.load(Relaxed),
            lower_ns: self.lower_ns.load(Relaxed),
            guest_ns: self.guest_ns.load(Relaxed),
            lift_ns: self.lift_ns.load(Relaxed),
            plugin: self.plugin.lock().map(|m| m.clone()).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_lands_in_buckets() {
        let m = StageMetrics::default();
        m.observe_latency(Duration::from_micros(40));
        m.observe_latency(Duration::from_micros(700));
        m.observe_latency(Duration::from_secs(5));
        let s = m.snapshot();
        assert_eq!(s.latency_us, vec![(50, 1), (1_000, 1), (u64::MAX, 1)]);
    }

    #[test]
    fn cost_per_post_is_the_batch_over_its_posts() {
        let m = StageMetrics::default();
        m.observe_call(Duration::from_micros(100), 256, None);
        m.observe_call(Duration::from_micros(3), 1, None);
        m.observe_call(Duration::from_micros(9), 0, None);
        let (b, sum) = m.per_post.buckets_seconds();
        // 100 µs / 256 = 390 ns → the 500 ns bucket, 256 posts; 3 µs → 4 µs.
        assert_eq!(b[1], (500e-9, 256));
        assert_eq!(b[4], (4e-6, 1));
        assert_eq!(b.iter().map(|(_, n)| n).sum::<u64>(), 257);
        assert!((sum - 103e-6).abs() < 1e-12, "{sum}");
        assert_eq!(m.latency.0.count(), 3);
    }
}
