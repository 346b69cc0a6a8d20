//! Retry timing (pure): exponential back-off between `queue.retry_min` and
//! `queue.retry_max`.
//!
//! # Must never
//! Return a wait shorter than `retry_min` or longer than `retry_max`.

use std::time::Duration;

/// How long to wait before the next attempt, after `attempts` failed ones
/// (1 for the first failure): `retry_min * 2^(attempts-1)`, capped.
pub(crate) fn backoff(attempts: u32, retry_min: Duration, retry_max: Duration) -> Duration {
    let doublings = attempts.saturating_sub(1).min(32);
    retry_min
        .checked_mul(1u32 << doublings.min(31))
        .unwrap_or(retry_max)
        .clamp(retry_min, retry_max.max(retry_min))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn doubles_then_caps() {
        let min = Duration::from_secs(300);
        let max = Duration::from_secs(3600);
        let waits: Vec<u64> = (1..=6).map(|a| backoff(a, min, max).as_secs()).collect();
        assert_eq!(waits, [300, 600, 1200, 2400, 3600, 3600]);
    }

    proptest! {
        #[test]
        fn always_within_bounds(attempts in 0u32..100, min in 1u64..10_000, extra in 0u64..100_000) {
            let min = Duration::from_millis(min);
            let max = min + Duration::from_millis(extra);
            let w = backoff(attempts, min, max);
            prop_assert!(w >= min && w <= max);
        }
    }
}
