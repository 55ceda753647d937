//! Power-of-two-choices over several upstreams, skipping open breakers.

use std::time::{Duration, Instant};

use super::breaker::{Attempt, AttemptResult, BreakerConfig, BreakerState, CircuitBreaker};

/// Weight of the newest latency sample in the moving average.
const EWMA_ALPHA: f64 = 0.3;

/// What the balancer knows about one upstream, for metrics and the edge policy's gates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemberHealth {
    /// Its breaker's state.
    pub breaker: BreakerState,
    /// Escalations sent and not yet finished.
    pub in_flight: u32,
    /// Moving average of its answer latency (zero before the first answer).
    pub latency: Duration,
}

#[derive(Debug, Clone)]
struct Member {
    breaker: CircuitBreaker,
    in_flight: u32,
    /// Moving average latency in microseconds; `None` until measured.
    ewma_us: Option<f64>,
}

/// Chooses an upstream per request: two random candidates among those whose breaker lets a
/// request through, and the one with the lower expected wait (latency times queue).
#[derive(Debug, Clone)]
pub struct Balancer {
    members: Vec<Member>,
    rng: u64,
}

impl Balancer {
    /// `count` upstreams, each with its own breaker; `seed` drives the random choices.
    pub fn new(count: usize, breaker: BreakerConfig, seed: u64) -> Balancer {
        let member = Member { breaker: CircuitBreaker::new(breaker), in_flight: 0, ewma_us: None };
        Balancer { members: vec![member; count], rng: seed | 1 }
    }

    /// Picks an upstream at `now` and lets an attempt through its breaker, never `exclude`
    /// (the upstream that just failed, on a retry). `None` when every other breaker refuses.
    pub fn pick(&mut self, now: Instant, exclude: Option<usize>) -> Option<(usize, Attempt)> {
        let candidates: Vec<usize> = (0..self.members.len())
            .filter(|&i| Some(i) != exclude && self.members[i].breaker.allows(now))
            .collect();
        let chosen = match candidates.len() {
            0 => return None,
            1 => candidates[0],
            n => {
                let a = (self.next_random() % n as u64) as usize;
                let b = (a + 1 + (self.next_random() % (n as u64 - 1)) as usize) % n;
                let (a, b) = (candidates[a], candidates[b]);
                if self.score(b) < self.score(a) { b } else { a }
            }
        };
        let member = &mut self.members[chosen];
        let attempt = member.breaker.acquire(now)?;
        member.in_flight += 1;
        Some((chosen, attempt))
    }

    /// Reports how the attempt sent to `index` ended.
    pub fn finish(&mut self, index: usize, now: Instant, attempt: Attempt, result: AttemptResult) {
        let Some(member) = self.members.get_mut(index) else { return };
        member.in_flight = member.in_flight.saturating_sub(1);
        if let AttemptResult::Success(latency) = result {
            let sample = latency.as_secs_f64() * 1e6;
            member.ewma_us = Some(match member.ewma_us {
                Some(avg) => EWMA_ALPHA * sample + (1.0 - EWMA_ALPHA) * avg,
                None => sample,
            });
        }
        member.breaker.record(now, attempt, result);
    }

    /// Whether any upstream would take a request at `now`.
    pub fn any_available(&self, now: Instant) -> bool {
        self.members.iter().any(|m| m.breaker.allows(now))
    }

    /// Every upstream's health at `now`, in configuration order.
    pub fn health(&self, now: Instant) -> Vec<MemberHealth> {
        self.members
            .iter()
            .map(|m| MemberHealth {
                breaker: m.breaker.state(now),
                in_flight: m.in_flight,
                latency: Duration::from_secs_f64(m.ewma_us.unwrap_or(0.0) / 1e6),
            })
            .collect()
    }

    /// Expected wait: average latency times the queue a new request would join. An
    /// unmeasured upstream scores as the best measured one, so it gets tried.
    fn score(&self, index: usize) -> f64 {
        let floor = self.members.iter().filter_map(|m| m.ewma_us).fold(f64::INFINITY, f64::min);
        let member = &self.members[index];
        let latency = member.ewma_us.unwrap_or(if floor.is_finite() { floor } else { 1.0 });
        latency.max(1.0) * f64::from(member.in_flight + 1)
    }

    /// xorshift64*: enough randomness to spread load, no dependency, reproducible in tests.
    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn breaker() -> BreakerConfig {
        BreakerConfig {
            failure_threshold: 2,
            latency_limit: 1000 * MS,
            open_for: 1000 * MS,
            half_open_probes: 1,
        }
    }

    #[test]
    fn prefers_the_less_loaded_of_two() {
        let t0 = Instant::now();
        let mut b = Balancer::new(2, breaker(), 7);
        // Equal latency; upstream 0 has three requests in flight.
        for i in 0..2 {
            b.members[i].ewma_us = Some(1000.0);
        }
        b.members[0].in_flight = 3;
        for _ in 0..20 {
            let (i, p) = b.pick(t0, None).unwrap();
            assert_eq!(i, 1);
            b.finish(i, t0, p, AttemptResult::Success(MS));
        }
    }

    #[test]
    fn prefers_the_faster_and_spreads_load() {
        let t0 = Instant::now();
        let mut b = Balancer::new(3, breaker(), 11);
        b.members[0].ewma_us = Some(100.0);
        b.members[1].ewma_us = Some(5000.0);
        b.members[2].ewma_us = Some(5000.0);
        let mut counts = [0; 3];
        for _ in 0..300 {
            let (i, _) = b.pick(t0, None).unwrap();
            counts[i] += 1;
        }
        // In flight piles up (nothing finishes), so the slow ones get a share too.
        assert!(counts[0] > counts[1] && counts[0] > counts[2], "{counts:?}");
        assert!(counts[1] > 0 && counts[2] > 0, "{counts:?}");
    }

    #[test]
    fn skips_open_breakers_and_avoids_the_last_failure() {
        let t0 = Instant::now();
        let mut b = Balancer::new(2, breaker(), 3);
        for _ in 0..2 {
            b.finish(0, t0, Attempt::Normal, AttemptResult::Failure);
        }
        assert_eq!(b.health(t0)[0].breaker, BreakerState::Open);
        for _ in 0..10 {
            let (i, p) = b.pick(t0, None).unwrap();
            assert_eq!(i, 1);
            b.finish(i, t0, p, AttemptResult::Success(MS));
        }
        assert_eq!(b.pick(t0, Some(1)), None, "a retry never goes back to the upstream that failed");
        assert_eq!(b.pick(t0, None).map(|(i, _)| i), Some(1));
        b.finish(1, t0, Attempt::Normal, AttemptResult::Failure);
        b.finish(1, t0, Attempt::Normal, AttemptResult::Failure);
        assert!(!b.any_available(t0));
        assert_eq!(b.pick(t0, None), None);
        // After the pause, a probe goes to one of them.
        assert_eq!(b.pick(t0 + 1000 * MS, None).map(|(_, p)| p), Some(Attempt::Probe));
    }

    #[test]
    fn avoids_the_failed_one_when_another_is_up() {
        let t0 = Instant::now();
        let mut b = Balancer::new(3, breaker(), 5);
        for _ in 0..50 {
            let (i, p) = b.pick(t0, Some(2)).unwrap();
            assert_ne!(i, 2);
            b.finish(i, t0, p, AttemptResult::Success(MS));
        }
    }
}
