//! A token bucket, driven by the caller's `now`: the rate limit of admission and the
//! escalation budget of the policy.

use std::time::{Duration, Instant};

use crate::config::RateSettings;

/// Holds up to `burst` tokens, refilled at `per_second`; each allowed event takes one.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: RateSettings, now: Instant) -> TokenBucket {
        let burst = f64::from(rate.burst);
        TokenBucket { per_second: rate.per_second.max(0.0), burst, tokens: burst, last: now }
    }

    /// Changes rate and burst (a mode switch), keeping the tokens held up to the new burst.
    pub fn set_rate(&mut self, rate: RateSettings, now: Instant) {
        self.refill(now);
        self.per_second = rate.per_second.max(0.0);
        self.burst = f64::from(rate.burst);
        self.tokens = self.tokens.min(self.burst);
    }

    /// Takes a token if one is there.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until a token is there; `None` if never (a zero rate or zero burst).
    pub fn time_to_token(&mut self, now: Instant) -> Option<Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            return Some(Duration::ZERO);
        }
        if self.per_second <= 0.0 || self.burst < 1.0 {
            return None;
        }
        // A rate so slow that the wait overflows a Duration is a wait of "never" as well.
        Duration::try_from_secs_f64((1.0 - self.tokens) / self.per_second).ok()
    }

    fn refill(&mut self, now: Instant) {
        // A `now` older than the last one (callers racing on a shared bucket) adds nothing.
        let elapsed = now.saturating_duration_since(self.last);
        if elapsed > Duration::ZERO {
            self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.burst);
            self.last = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(RateSettings { per_second: 10.0, burst: 3 }, t0);
        assert!((0..3).all(|_| b.try_take(t0)));
        assert!(!b.try_take(t0));
        assert_eq!(b.time_to_token(t0), Some(Duration::from_millis(100)));
        assert!(!b.try_take(t0 + Duration::from_millis(99)));
        assert!(b.try_take(t0 + Duration::from_millis(100)));
        // Refill stops at the burst, however long the pause.
        let later = t0 + Duration::from_secs(60);
        assert!((0..3).all(|_| b.try_take(later)));
        assert!(!b.try_take(later));
    }

    #[test]
    fn zero_rate_never_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(RateSettings { per_second: 0.0, burst: 0 }, t0);
        assert!(!b.try_take(t0 + Duration::from_secs(10)));
        assert_eq!(b.time_to_token(t0), None);
    }

    #[test]
    fn set_rate_caps_held_tokens() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(RateSettings { per_second: 1.0, burst: 10 }, t0);
        b.set_rate(RateSettings { per_second: 1.0, burst: 2 }, t0);
        assert!(b.try_take(t0) && b.try_take(t0));
        assert!(!b.try_take(t0));
    }
}
