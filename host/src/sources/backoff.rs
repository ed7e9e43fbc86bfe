//! Reconnection discipline for streaming connections, as Twitter documents it
//! ("Connecting to a streaming endpoint", v1.1 and v2 filtered stream docs):
//!
//! | failure | wait before the next attempt |
//! |---|---|
//! | network / TCP errors, stalls | linear: +250 ms per attempt, up to 16 s |
//! | HTTP errors (5xx, 4xx other than below) | exponential: 5 s, doubling, up to 320 s |
//! | HTTP 420 / 429 (rate limited, too many connections) | exponential: 60 s, doubling (capped here at 960 s) |
//! | HTTP 401 / 403 (bad or revoked credentials) | stop: never hammer with bad credentials |
//!
//! A connection that stayed up for [`HEALTHY_AFTER`] resets every counter.
//! One [`Backoff`] serves every live source; the driver ([`super::live`])
//! applies it, logging and counting every change.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

/// How long a connection must have been up for the counters to reset.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(60);

const NETWORK_STEP: Duration = Duration::from_millis(250);
const NETWORK_MAX: Duration = Duration::from_secs(16);
const HTTP_FIRST: Duration = Duration::from_secs(5);
const HTTP_MAX: Duration = Duration::from_secs(320);
const RATE_FIRST: Duration = Duration::from_secs(60);
const RATE_MAX: Duration = Duration::from_secs(960);

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Could not connect, connection reset, stalled, cut mid-message.
    Network(String),
    /// An HTTP status other than the classes below, or an in-stream
    /// operational disconnect.
    Http(u16, String),
    /// 420 or 429: rate limited or too many connections.
    RateLimited(u16, String),
    /// 401 or 403: the credentials are refused.
    Unauthorized(u16, String),
}

impl Failure {
    /// Classify an HTTP status.
    pub fn from_status(status: u16, detail: String) -> Failure {
        match status {
            401 | 403 => Failure::Unauthorized(status, detail),
            420 | 429 => Failure::RateLimited(status, detail),
            _ => Failure::Http(status, detail),
        }
    }

    /// The class's name in logs.
    pub fn class(&self) -> &'static str {
        match self {
            Failure::Network(_) => "network",
            Failure::Http(..) => "http",
            Failure::RateLimited(..) => "rate_limited",
            Failure::Unauthorized(..) => "unauthorized",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Network(d) => write!(f, "network error: {d}"),
            Failure::Http(s, d) | Failure::RateLimited(s, d) | Failure::Unauthorized(s, d) => {
                write!(f, "HTTP {s}: {d}")
            }
        }
    }
}

/// What to do after a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    RetryAfter(Duration),
    Stop,
}

/// Per-class attempt counters.
#[derive(Debug, Default, Clone)]
pub struct Backoff {
    network: u32,
    http: u32,
    rate: u32,
    connected_at: Option<Instant>,
}

impl Backoff {
    /// The connection is up (data flows).
    pub fn connected(&mut self, now: Instant) {
        self.connected_at = Some(now);
    }

    /// The connection ended with `f` at `now`: how long to wait.
    pub fn failed(&mut self, f: &Failure, now: Instant) -> Decision {
        if let Some(t) = self.connected_at.take()
            && now.duration_since(t) >= HEALTHY_AFTER
        {
            *self = Backoff::default();
        }
        match f {
            Failure::Network(_) => {
                self.network += 1;
                Decision::RetryAfter((NETWORK_STEP * self.network).min(NETWORK_MAX))
            }
            Failure::Http(..) => {
                self.http += 1;
                Decision::RetryAfter(doubling(HTTP_FIRST, self.http, HTTP_MAX))
            }
            Failure::RateLimited(..) => {
                self.rate += 1;
                Decision::RetryAfter(doubling(RATE_FIRST, self.rate, RATE_MAX))
            }
            Failure::Unauthorized(..) => Decision::Stop,
        }
    }
}

fn doubling(first: Duration, attempt: u32, max: Duration) -> Duration {
    first.saturating_mul(1u32 << (attempt - 1).min(20)).min(max)
}

/// Counters of a reconnecting connection.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    pub connects: AtomicU64,
    pub network_failures: AtomicU64,
    pub http_failures: AtomicU64,
    pub rate_limited: AtomicU64,
    pub unauthorized: AtomicU64,
}

impl ConnectionStats {
    /// Count a failure by its class.
    pub fn count(&self, f: &Failure) {
        match f {
            Failure::Network(_) => self.network_failures.fetch_add(1, Relaxed),
            Failure::Http(..) => self.http_failures.fetch_add(1, Relaxed),
            Failure::RateLimited(..) => self.rate_limited.fetch_add(1, Relaxed),
            Failure::Unauthorized(..) => self.unauthorized.fetch_add(1, Relaxed),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waits(failures: &[Failure]) -> Vec<Decision> {
        let mut b = Backoff::default();
        let now = Instant::now();
        failures.iter().map(|f| b.failed(f, now)).collect()
    }

    fn secs(d: &[f64]) -> Vec<Decision> {
        d.iter().map(|s| Decision::RetryAfter(Duration::from_secs_f64(*s))).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn network_errors_back_off_linearly_to_16_s() {
        let f = vec![Failure::Network("reset".into()); 70];
        let got = waits(&f);
        assert_eq!(got[..4], secs(&[0.25, 0.5, 0.75, 1.0])[..]);
        assert_eq!(got[63], Decision::RetryAfter(Duration::from_secs(16)));
        assert_eq!(got[69], Decision::RetryAfter(Duration::from_secs(16)));
    }

    #[tokio::test(start_paused = true)]
    async fn http_errors_back_off_exponentially_5_to_320_s() {
        let f = vec![Failure::Http(503, "unavailable".into()); 9];
        assert_eq!(waits(&f), secs(&[5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 320.0, 320.0]));
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limits_back_off_from_60_s() {
        let f: Vec<Failure> =
            [420, 429, 429, 420, 429, 429].iter().map(|s| Failure::from_status(*s, String::new())).collect();
        assert_eq!(waits(&f), secs(&[60.0, 120.0, 240.0, 480.0, 960.0, 960.0]));
    }

    #[tokio::test(start_paused = true)]
    async fn bad_credentials_stop() {
        assert_eq!(waits(&[Failure::from_status(401, String::new())]), vec![Decision::Stop]);
        assert_eq!(waits(&[Failure::from_status(403, String::new())]), vec![Decision::Stop]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_healthy_period_resets_the_counters() {
        let mut b = Backoff::default();
        let t0 = Instant::now();
        b.failed(&Failure::Http(500, String::new()), t0);
        b.failed(&Failure::Http(500, String::new()), t0);
        b.connected(t0);
        // Up for only 10 s: the counter continues.
        assert_eq!(
            b.failed(&Failure::Http(500, String::new()), t0 + Duration::from_secs(10)),
            Decision::RetryAfter(Duration::from_secs(20))
        );
        b.connected(t0 + Duration::from_secs(10));
        // Up for 70 s: back to the first step.
        assert_eq!(
            b.failed(&Failure::Http(500, String::new()), t0 + Duration::from_secs(80)),
            Decision::RetryAfter(Duration::from_secs(5))
        );
    }
}
