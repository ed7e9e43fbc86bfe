//! Full jitter for retry waits: a fleet of collectors that lost the same
//! server at the same moment must not come back in step.
//!
//! A small xorshift64 generator: waits need spread, not cryptographic
//! quality, and a seed makes a test reproducible.

use std::time::Duration;

/// Draws waits uniformly in `[floor, ceiling]`.
#[derive(Debug, Clone)]
pub struct Jitter {
    state: u64,
}

impl Default for Jitter {
    /// Seeded from the clock and the process id.
    fn default() -> Jitter {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        Jitter::seeded(nanos ^ (u64::from(std::process::id()) << 32))
    }
}

impl Jitter {
    /// Reproducible draws.
    pub fn seeded(seed: u64) -> Jitter {
        Jitter { state: seed | 1 }
    }

    /// Uniform in `[floor, ceiling]`; `floor` when the ceiling is below it.
    pub fn spread(&mut self, floor: Duration, ceiling: Duration) -> Duration {
        let x = &mut self.state;
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        let unit = (*x >> 11) as f64 / (1u64 << 53) as f64;
        floor + ceiling.saturating_sub(floor).mul_f64(unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_cover_the_interval_and_never_leave_it() {
        let mut j = Jitter::seeded(42);
        let (lo, hi) = (Duration::from_millis(500), Duration::from_secs(8));
        let draws: Vec<Duration> = (0..1000).map(|_| j.spread(lo, hi)).collect();
        assert!(draws.iter().all(|d| *d >= lo && *d <= hi));
        let quarters = draws.iter().fold([0; 4], |mut q, d| {
            q[(((*d - lo).as_secs_f64() / (hi - lo).as_secs_f64() * 4.0) as usize).min(3)] += 1;
            q
        });
        assert!(quarters.iter().all(|n| *n > 180), "{quarters:?}");
        assert_eq!(Jitter::seeded(1).spread(hi, lo), hi, "a ceiling below the floor gives the floor");
    }
}
