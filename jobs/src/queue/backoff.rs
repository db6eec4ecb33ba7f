//! The retry schedule: when a failed job runs again.
//!
//! `delay(n) = min(cap, base · 2^(n−1)) · (0.75 + 0.5·u)` for the n-th failed attempt, with `u`
//! uniform in [0, 1): exponential growth from seconds to hours, spread ±25% so that jobs failing
//! together (a provider outage) do not come back together. The result is stored in `jobs.run_at`,
//! so a crashed worker loses nothing and a waiting job holds no worker.

use std::time::Duration;

/// RetryPolicy says how often and how late a queue's failed jobs are tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; after the last failure the job is dead.
    pub max_attempts: i32,
    /// The delay after the first failure, before jitter.
    pub base: Duration,
    /// The longest delay, before jitter.
    pub cap: Duration,
}

impl RetryPolicy {
    /// The default: 15 attempts, 5 s doubling to a 6 h cap — about 17 hours from first to last try.
    pub const DEFAULT: RetryPolicy = RetryPolicy {
        max_attempts: 15,
        base: Duration::from_secs(5),
        cap: Duration::from_secs(6 * 3600),
    };

    /// For calls whose idempotency key the provider keeps 24 hours: 12 attempts, the last at most
    /// about 3.6 hours after the first (5 s doubling to 85 min, jitter included).
    pub const WITHIN_A_DAY: RetryPolicy = RetryPolicy {
        max_attempts: 12,
        ..RetryPolicy::DEFAULT
    };

    /// The delay before the attempt after failed attempt number `failed_attempt` (1-based), for a
    /// jitter draw `u` in [0, 1).
    pub fn delay(&self, failed_attempt: i32, u: f64) -> Duration {
        let doublings = failed_attempt.saturating_sub(1).clamp(0, 62) as u32;
        let unjittered = self
            .base
            .checked_mul(1u32.checked_shl(doublings.min(31)).unwrap_or(u32::MAX))
            .unwrap_or(self.cap)
            .min(self.cap);
        unjittered.mul_f64(0.75 + 0.5 * u.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: RetryPolicy = RetryPolicy::DEFAULT;

    #[test]
    fn the_within_a_day_schedule_ends_well_inside_a_day() {
        let worst: Duration = (1..RetryPolicy::WITHIN_A_DAY.max_attempts)
            .map(|n| RetryPolicy::WITHIN_A_DAY.delay(n, 1.0))
            .sum();
        assert!(worst < Duration::from_secs(4 * 3600), "{worst:?}");
    }

    #[test]
    fn grows_by_doubling_from_the_base() {
        assert_eq!(P.delay(1, 0.5), Duration::from_secs(5));
        assert_eq!(P.delay(2, 0.5), Duration::from_secs(10));
        assert_eq!(P.delay(3, 0.5), Duration::from_secs(20));
        assert_eq!(P.delay(10, 0.5), Duration::from_secs(2560));
    }

    #[test]
    fn stops_growing_at_the_cap() {
        assert_eq!(P.delay(13, 0.5), Duration::from_secs(20480));
        assert_eq!(P.delay(14, 0.5), Duration::from_secs(6 * 3600));
        assert_eq!(P.delay(40, 0.5), Duration::from_secs(6 * 3600));
        assert_eq!(P.delay(i32::MAX, 0.5), Duration::from_secs(6 * 3600));
    }

    #[test]
    fn jitter_spreads_a_quarter_either_way() {
        assert_eq!(P.delay(2, 0.0), Duration::from_millis(7500));
        let top = P.delay(2, 0.999_999);
        assert!(
            top > Duration::from_millis(12_499) && top < Duration::from_millis(12_500),
            "{top:?}"
        );
        assert!(P.delay(2, 0.25) < P.delay(2, 0.75));
    }

    #[test]
    fn a_nonsense_attempt_number_gets_the_base_delay() {
        assert_eq!(P.delay(0, 0.5), Duration::from_secs(5));
        assert_eq!(P.delay(-3, 0.5), Duration::from_secs(5));
    }

    #[test]
    fn the_default_schedule_spans_about_seventeen_hours() {
        let total: Duration = (1..P.max_attempts).map(|n| P.delay(n, 0.5)).sum();
        assert_eq!(total, Duration::from_secs(62_555));
    }
}
