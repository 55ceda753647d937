//! A circuit breaker per upstream, driven by explicit `now`.

use std::time::{Duration, Instant};

/// When a breaker opens and how it recovers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failed (or too slow) escalations that open the breaker (default 5).
    pub failure_threshold: u32,
    /// An answer slower than this counts as a failure (default 1 s): an upstream that
    /// answers after the requester gave up is as useless as one that does not answer.
    pub latency_limit: Duration,
    /// How long an open breaker refuses requests before letting probes through (default 2 s).
    pub open_for: Duration,
    /// Probe requests let through at once while half-open (default 1).
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            latency_limit: Duration::from_secs(1),
            open_for: Duration::from_secs(2),
            half_open_probes: 1,
        }
    }
}

/// The breaker's state, as seen from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow.
    Closed,
    /// Requests are refused until the open period ends.
    Open,
    /// The open period ended: a few probes decide whether to close or reopen.
    HalfOpen,
}

/// How the breaker let one attempt through; returned to it with the attempt's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// An ordinary request through a closed breaker.
    Normal,
    /// A probe through a half-open breaker: its outcome closes or reopens it.
    Probe,
}

/// How an attempt ended, as far as the upstream's health is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    /// The upstream answered after this long.
    Success(Duration),
    /// The upstream failed, was unreachable, or let the deadline pass.
    Failure,
    /// The request never reached the upstream for a local reason; says nothing about it.
    Ignored,
}

#[derive(Debug, Clone, Copy)]
enum Inner {
    Closed { consecutive_failures: u32 },
    Open { until: Instant },
    HalfOpen { probes_in_flight: u32 },
}

/// Opens on consecutive failures or slow answers, probes after a pause, closes on success.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    inner: Inner,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> CircuitBreaker {
        CircuitBreaker { config, inner: Inner::Closed { consecutive_failures: 0 } }
    }

    /// The state at `now` (an open breaker whose pause has ended reports half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.inner {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { until } if now < until => BreakerState::Open,
            Inner::Open { .. } | Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Whether [`CircuitBreaker::acquire`] would grant a permit at `now`.
    pub fn allows(&self, now: Instant) -> bool {
        match self.inner {
            Inner::Closed { .. } => true,
            Inner::Open { until } => now >= until,
            Inner::HalfOpen { probes_in_flight } => probes_in_flight < self.config.half_open_probes,
        }
    }

    /// Asks to send one attempt at `now`; `None` means the breaker refuses it.
    pub fn acquire(&mut self, now: Instant) -> Option<Attempt> {
        match self.inner {
            Inner::Closed { .. } => Some(Attempt::Normal),
            Inner::Open { until } if now < until => None,
            Inner::Open { .. } => {
                self.inner = Inner::HalfOpen { probes_in_flight: 1 };
                Some(Attempt::Probe)
            }
            Inner::HalfOpen { probes_in_flight } if probes_in_flight < self.config.half_open_probes => {
                self.inner = Inner::HalfOpen { probes_in_flight: probes_in_flight + 1 };
                Some(Attempt::Probe)
            }
            Inner::HalfOpen { .. } => None,
        }
    }

    /// Returns an attempt with its result.
    pub fn record(&mut self, now: Instant, attempt: Attempt, result: AttemptResult) {
        let failed = match result {
            AttemptResult::Success(latency) => latency > self.config.latency_limit,
            AttemptResult::Failure => true,
            AttemptResult::Ignored => {
                if let (Attempt::Probe, Inner::HalfOpen { probes_in_flight }) = (attempt, self.inner) {
                    self.inner = Inner::HalfOpen { probes_in_flight: probes_in_flight.saturating_sub(1) };
                }
                return;
            }
        };
        let open = Inner::Open { until: now + self.config.open_for };
        self.inner = match (attempt, self.inner) {
            (Attempt::Normal, Inner::Closed { consecutive_failures }) if failed => {
                let consecutive_failures = consecutive_failures + 1;
                if consecutive_failures >= self.config.failure_threshold {
                    open
                } else {
                    Inner::Closed { consecutive_failures }
                }
            }
            (Attempt::Normal, Inner::Closed { .. }) => Inner::Closed { consecutive_failures: 0 },
            (Attempt::Probe, Inner::HalfOpen { .. }) if failed => open,
            (Attempt::Probe, Inner::HalfOpen { .. }) => Inner::Closed { consecutive_failures: 0 },
            // Requests sent before the breaker changed state report late; the state that
            // changed since is better informed.
            (_, inner) => inner,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn config() -> BreakerConfig {
        BreakerConfig {
            failure_threshold: 3,
            latency_limit: 100 * MS,
            open_for: 500 * MS,
            half_open_probes: 1,
        }
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(config());
        for result in [
            AttemptResult::Failure,
            AttemptResult::Failure,
            AttemptResult::Success(MS),
            AttemptResult::Failure,
            AttemptResult::Failure,
        ] {
            let p = b.acquire(t0).unwrap();
            b.record(t0, p, result);
        }
        assert_eq!(b.state(t0), BreakerState::Closed, "a success resets the count");
        let p = b.acquire(t0).unwrap();
        b.record(t0, p, AttemptResult::Failure);
        assert_eq!(b.state(t0), BreakerState::Open);
        assert_eq!(b.acquire(t0 + 499 * MS), None);
    }

    #[test]
    fn slow_answers_count_as_failures() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(config());
        for _ in 0..3 {
            let p = b.acquire(t0).unwrap();
            b.record(t0, p, AttemptResult::Success(101 * MS));
        }
        assert_eq!(b.state(t0), BreakerState::Open);
    }

    #[test]
    fn half_open_probe_closes_or_reopens() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(config());
        for _ in 0..3 {
            let p = b.acquire(t0).unwrap();
            b.record(t0, p, AttemptResult::Failure);
        }
        let t1 = t0 + 500 * MS;
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
        assert_eq!(b.acquire(t1), Some(Attempt::Probe));
        assert_eq!(b.acquire(t1), None, "one probe at a time");
        b.record(t1, Attempt::Probe, AttemptResult::Failure);
        assert_eq!(b.state(t1), BreakerState::Open, "a failed probe reopens");
        assert!(!b.allows(t1 + 499 * MS));

        let t2 = t1 + 500 * MS;
        let p = b.acquire(t2).unwrap();
        // A late result from before the breaker opened changes nothing.
        b.record(t2, Attempt::Normal, AttemptResult::Success(MS));
        assert_eq!(b.state(t2), BreakerState::HalfOpen);
        b.record(t2, p, AttemptResult::Success(MS));
        assert_eq!(b.state(t2), BreakerState::Closed);
        assert_eq!(b.acquire(t2), Some(Attempt::Normal));
    }

    #[test]
    fn ignored_probe_frees_its_slot() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(BreakerConfig { failure_threshold: 1, ..config() });
        let p = b.acquire(t0).unwrap();
        b.record(t0, p, AttemptResult::Failure);
        let t1 = t0 + 600 * MS;
        let probe = b.acquire(t1).unwrap();
        b.record(t1, probe, AttemptResult::Ignored);
        assert_eq!(b.acquire(t1), Some(Attempt::Probe));
    }
}
