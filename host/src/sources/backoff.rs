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
//! **Full jitter** spreads a fleet's reconnects after a shared outage: each
//! wait is drawn uniformly between the class's documented minimum (its first
//! step: 250 ms, 5 s, 60 s) and the table's value for the attempt, which stays
//! the ceiling (16 s, 320 s, 960 s at most). The first wait of each class is
//! therefore exact.
//!
//! A connection that stayed up for [`HEALTHY_AFTER`] resets every counter.
//! One [`Backoff`] serves every live source; the driver ([`super::live`])
//! applies it, logging and counting every change.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::time::Instant;

use crate::jitter::Jitter;
use crate::telemetry::ConnectionStats;

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
#[derive(Debug, Clone)]
pub struct Backoff {
    network: u32,
    http: u32,
    rate: u32,
    connected_at: Option<Instant>,
    /// `None`: the table's values exactly.
    jitter: Option<Jitter>,
}

impl Default for Backoff {
    /// Jittered, seeded from the clock and the process id.
    fn default() -> Backoff {
        Backoff { jitter: Some(Jitter::default()), ..Backoff::exact() }
    }
}

impl Backoff {
    /// The table's values exactly (tests of the table and of the driver).
    pub fn exact() -> Backoff {
        Backoff { network: 0, http: 0, rate: 0, connected_at: None, jitter: None }
    }

    /// Jittered from a given seed (reproducible).
    pub fn seeded(seed: u64) -> Backoff {
        Backoff { jitter: Some(Jitter::seeded(seed)), ..Backoff::exact() }
    }

    /// Uniform in `[floor, ceiling]` (the ceiling itself without jitter).
    fn spread(&mut self, floor: Duration, ceiling: Duration) -> Duration {
        match self.jitter.as_mut() {
            Some(j) => j.spread(floor, ceiling),
            None => ceiling,
        }
    }

    /// The connection is up (data flows).
    pub fn connected(&mut self, now: Instant) {
        self.connected_at = Some(now);
    }

    /// The connection ended with `f` at `now`: how long to wait.
    pub fn failed(&mut self, f: &Failure, now: Instant) -> Decision {
        if let Some(t) = self.connected_at.take()
            && now.duration_since(t) >= HEALTHY_AFTER
        {
            (self.network, self.http, self.rate) = (0, 0, 0);
        }
        let (floor, ceiling) = match f {
            Failure::Network(_) => {
                self.network += 1;
                (NETWORK_STEP, (NETWORK_STEP * self.network).min(NETWORK_MAX))
            }
            Failure::Http(..) => {
                self.http += 1;
                (HTTP_FIRST, doubling(HTTP_FIRST, self.http, HTTP_MAX))
            }
            Failure::RateLimited(..) => {
                self.rate += 1;
                (RATE_FIRST, doubling(RATE_FIRST, self.rate, RATE_MAX))
            }
            Failure::Unauthorized(..) => return Decision::Stop,
        };
        Decision::RetryAfter(self.spread(floor, ceiling))
    }
}

fn doubling(first: Duration, attempt: u32, max: Duration) -> Duration {
    first.saturating_mul(1u32 << (attempt - 1).min(20)).min(max)
}

impl Failure {
    /// Count this failure by its class.
    pub fn count_in(&self, stats: &ConnectionStats) {
        let counter = match self {
            Failure::Network(_) => &stats.network_failures,
            Failure::Http(..) => &stats.http_failures,
            Failure::RateLimited(..) => &stats.rate_limited,
            Failure::Unauthorized(..) => &stats.unauthorized,
        };
        counter.fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waits(failures: &[Failure]) -> Vec<Decision> {
        let mut b = Backoff::exact();
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
        let mut b = Backoff::exact();
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

    /// Issue 13, item 6: every wait lies between the class's minimum and the
    /// table's value; the first is exact; waits spread (a fleet does not
    /// reconnect in step); two seeds differ.
    #[tokio::test(start_paused = true)]
    async fn jitter_stays_within_the_documented_bounds_and_spreads() {
        let classes = [
            (Failure::Network("reset".into()), NETWORK_STEP, NETWORK_MAX),
            (Failure::Http(503, String::new()), HTTP_FIRST, HTTP_MAX),
            (Failure::RateLimited(429, String::new()), RATE_FIRST, RATE_MAX),
        ];
        let now = Instant::now();
        for (f, floor, max) in classes {
            let mut draws = Vec::new();
            for seed in 1..=200u64 {
                let (mut b, mut table) = (Backoff::seeded(seed), Backoff::exact());
                for attempt in 1..=12 {
                    let (Decision::RetryAfter(w), Decision::RetryAfter(ceiling)) =
                        (b.failed(&f, now), table.failed(&f, now))
                    else {
                        panic!("{f} stopped");
                    };
                    assert!(
                        w >= floor && w <= ceiling && ceiling <= max,
                        "{f} attempt {attempt}: {w:?} of {ceiling:?}"
                    );
                    if attempt == 1 {
                        assert_eq!(w, floor, "{f}: the first wait is the documented minimum");
                    }
                    if attempt == 4 {
                        draws.push(w.as_secs_f64() / ceiling.as_secs_f64());
                    }
                }
            }
            // Uniform over [floor/ceiling, 1]: spread over the interval.
            let low = draws.iter().filter(|d| **d < 0.6).count();
            let high = draws.iter().filter(|d| **d > 0.8).count();
            assert!(low > 40 && high > 20, "{f}: low {low}, high {high} of {}", draws.len());
        }
        let http = Failure::Http(500, String::new());
        let seq = |seed| {
            let mut b = Backoff::seeded(seed);
            (0..5).map(|_| b.failed(&http, now)).collect::<Vec<_>>()
        };
        assert_ne!(seq(1), seq(2));
        assert_eq!(seq(7), seq(7));
    }
}
