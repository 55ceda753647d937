//! A retry budget: retries allowed only as a fraction of recent traffic.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How much retrying is allowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryConfig {
    /// Retries allowed per request in the window (default 0.2: at most 20% extra load on an
    /// upstream that is already struggling).
    pub ratio: f64,
    /// Retries allowed per second regardless of traffic, so a quiet node can still retry
    /// (default 1).
    pub min_per_second: f64,
    /// How far back traffic is counted (default 10 s).
    pub window: Duration,
    /// Most attempts for one escalation, the first included (default 3).
    pub max_attempts: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig { ratio: 0.2, min_per_second: 1.0, window: Duration::from_secs(10), max_attempts: 3 }
    }
}

/// Counts requests and retries in a sliding window of ten buckets.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    config: RetryConfig,
    bucket_len: Duration,
    /// (bucket start, requests, retries), oldest first.
    buckets: VecDeque<(Instant, u64, u64)>,
}

const BUCKETS: u32 = 10;

impl RetryBudget {
    /// An empty budget.
    pub fn new(config: RetryConfig) -> RetryBudget {
        let bucket_len = (config.window / BUCKETS).max(Duration::from_millis(1));
        RetryBudget { config, bucket_len, buckets: VecDeque::new() }
    }

    /// The configuration.
    pub fn config(&self) -> &RetryConfig {
        &self.config
    }

    /// Counts one original request (not a retry) at `now`.
    pub fn record_request(&mut self, now: Instant) {
        self.bucket(now).1 += 1;
    }

    /// Takes one retry from the budget at `now` if there is one left.
    pub fn try_retry(&mut self, now: Instant) -> bool {
        self.bucket(now);
        let (requests, retries) = self.buckets.iter().fold((0, 0), |(q, r), b| (q + b.1, r + b.2));
        let allowed = self.config.min_per_second * self.config.window.as_secs_f64()
            + self.config.ratio * requests as f64;
        if (retries + 1) as f64 > allowed {
            return false;
        }
        self.bucket(now).2 += 1;
        true
    }

    /// The current bucket, after dropping buckets older than the window.
    fn bucket(&mut self, now: Instant) -> &mut (Instant, u64, u64) {
        while self.buckets.front().is_some_and(|b| now.saturating_duration_since(b.0) >= self.config.window) {
            self.buckets.pop_front();
        }
        let fresh = self.buckets.back().is_none_or(|b| now.saturating_duration_since(b.0) >= self.bucket_len);
        if fresh {
            self.buckets.push_back((now, 0, 0));
        }
        let last = self.buckets.len() - 1;
        &mut self.buckets[last]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_a_fraction_of_traffic() {
        let t0 = Instant::now();
        let config =
            RetryConfig { ratio: 0.1, min_per_second: 0.0, window: Duration::from_secs(10), max_attempts: 3 };
        let mut budget = RetryBudget::new(config);
        assert!(!budget.try_retry(t0), "no traffic, no retries");
        for _ in 0..50 {
            budget.record_request(t0);
        }
        let granted = (0..20).filter(|_| budget.try_retry(t0)).count();
        assert_eq!(granted, 5);
    }

    #[test]
    fn old_traffic_leaves_the_window() {
        let t0 = Instant::now();
        let config =
            RetryConfig { ratio: 0.5, min_per_second: 0.0, window: Duration::from_secs(10), max_attempts: 3 };
        let mut budget = RetryBudget::new(config);
        for _ in 0..10 {
            budget.record_request(t0);
        }
        assert!(budget.try_retry(t0 + Duration::from_secs(9)));
        assert!(!budget.try_retry(t0 + Duration::from_secs(10)), "the requests aged out");
    }

    #[test]
    fn a_quiet_node_keeps_a_minimum() {
        let t0 = Instant::now();
        let config =
            RetryConfig { ratio: 0.0, min_per_second: 0.5, window: Duration::from_secs(4), max_attempts: 3 };
        let mut budget = RetryBudget::new(config);
        assert!(budget.try_retry(t0));
        assert!(budget.try_retry(t0));
        assert!(!budget.try_retry(t0));
        assert!(budget.try_retry(t0 + Duration::from_secs(4)));
    }
}
