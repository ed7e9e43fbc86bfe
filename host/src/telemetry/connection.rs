//! Counters of a reconnecting connection (a live source's), read by the
//! admin endpoint and /metrics.

use std::sync::atomic::AtomicU64;

/// Counters of a reconnecting connection; the source counts a failure by
/// its class (`sources::backoff::Failure::count_in`).
#[derive(Debug, Default)]
pub struct ConnectionStats {
    /// Gauge: 1 while a connection is up and data may flow.
    pub connected: AtomicU64,
    pub connects: AtomicU64,
    pub network_failures: AtomicU64,
    pub http_failures: AtomicU64,
    pub rate_limited: AtomicU64,
    pub unauthorized: AtomicU64,
}
