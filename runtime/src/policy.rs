//! The escalation policy: which tier answers a request. Sans-IO: it takes the plugin's
//! outcome, the route's threshold for the current mode, what is known of the upstream, the
//! request's deadline and `now`, and returns a [`Decision`]. The transport and the HTTP
//! front door act on it.
//!
//! Gates, in order (the budget last, so a request that could not escalate anyway spends no
//! token):
//! 1. confidence ≥ threshold → answer locally (a plugin's explicit escalation skips this);
//! 2. no upstream → degraded;
//! 3. breaker open → degraded (half-open lets the request through as the breaker's probe;
//!    the breaker itself limits how many);
//! 4. the time left before the deadline does not cover the upstream's recent latency →
//!    degraded;
//! 5. the escalation budget (a token bucket per mode, protecting the upstream) is empty →
//!    degraded.
//!
//! "Degraded" means the local answer, marked with the reason; when the plugin produced no
//! local answer there is nothing to degrade to and the decision is [`Decision::Fail`].

use std::fmt;
use std::time::{Duration, Instant};

use crate::config::RateSettings;
use crate::token_bucket::TokenBucket;
use crate::upstream::BreakerState;

/// What the plugin returned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PluginOutcome {
    /// An answer with its confidence in `[0, 1]`.
    Answer {
        /// The plugin's confidence.
        confidence: f64,
    },
    /// The plugin asked to escalate.
    Escalate {
        /// Whether it also produced an answer to fall back on.
        has_local_answer: bool,
    },
}

/// Why a request was answered locally although it should have escalated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DegradedReason {
    /// This node has no upstream.
    NoUpstream,
    /// The upstream's circuit breaker is open.
    BreakerOpen,
    /// The time left before the deadline does not cover the upstream's recent latency.
    DeadlineTooShort,
    /// The escalation budget of the current mode is spent.
    BudgetExhausted,
    /// The escalation was tried and failed (reported by the caller, not decided here).
    UpstreamFailed,
}

impl DegradedReason {
    /// Every reason, for metrics that list each from the start.
    pub const ALL: [DegradedReason; 5] = [
        DegradedReason::NoUpstream,
        DegradedReason::BreakerOpen,
        DegradedReason::DeadlineTooShort,
        DegradedReason::BudgetExhausted,
        DegradedReason::UpstreamFailed,
    ];

    /// Stable snake_case name, for response parameters and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            DegradedReason::NoUpstream => "no_upstream",
            DegradedReason::BreakerOpen => "breaker_open",
            DegradedReason::DeadlineTooShort => "deadline_too_short",
            DegradedReason::BudgetExhausted => "budget_exhausted",
            DegradedReason::UpstreamFailed => "upstream_failed",
        }
    }
}

impl fmt::Display for DegradedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which tier answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// The local answer is good enough.
    Local,
    /// Send it upstream, with at most `time_left` to get an answer back.
    Escalate {
        /// Time until the request's deadline.
        time_left: Duration,
    },
    /// Answer locally, marked degraded.
    Degraded(DegradedReason),
    /// No local answer and no escalation: the request gets an explicit error.
    Fail(DegradedReason),
}

/// What the policy knows of the upstream when deciding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpstreamView {
    /// Breaker state from the transport.
    pub breaker: BreakerState,
    /// Recent latency (see [`crate::upstream::UpstreamHealth::latency`]); `None` before any
    /// escalation.
    pub latency: Option<Duration>,
}

/// One request's inputs to the policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyInput {
    /// What the plugin returned.
    pub outcome: PluginOutcome,
    /// The route's confidence threshold in the current mode.
    pub threshold: f64,
    /// The upstream, if this node has one.
    pub upstream: Option<UpstreamView>,
    /// When the request must be answered.
    pub deadline: Instant,
}

/// The escalation policy of a node: the budget it spends, and the gates. One per node; the
/// caller serialises access (it is a few comparisons under a lock).
#[derive(Debug, Clone)]
pub struct EscalationPolicy {
    budget: TokenBucket,
}

/// How much slower than its recent average the upstream may be and still be waited for: a
/// request escalates only if the time left covers this multiple of the recent latency, since
/// an escalation that overruns the deadline wastes the upstream's work and the request's time.
const LATENCY_HEADROOM: f64 = 1.5;

impl EscalationPolicy {
    /// A policy with a full escalation budget.
    pub fn new(budget: RateSettings, now: Instant) -> EscalationPolicy {
        EscalationPolicy { budget: TokenBucket::new(budget, now) }
    }

    /// Changes the budget (on a mode switch).
    pub fn set_budget(&mut self, budget: RateSettings, now: Instant) {
        self.budget.set_rate(budget, now);
    }

    /// Spends a budget token on an escalation the policy did not decide (a shadow check);
    /// `false` if the budget is empty.
    pub fn try_spend(&mut self, now: Instant) -> bool {
        self.budget.try_take(now)
    }

    /// Decides one request, spending a budget token if it escalates.
    pub fn decide(&mut self, req: &PolicyInput, now: Instant) -> Decision {
        let has_local = match req.outcome {
            PluginOutcome::Answer { confidence } if confidence >= req.threshold => return Decision::Local,
            PluginOutcome::Answer { .. } => true,
            PluginOutcome::Escalate { has_local_answer } => has_local_answer,
        };
        let fallback = |reason| if has_local { Decision::Degraded(reason) } else { Decision::Fail(reason) };
        let Some(upstream) = req.upstream else {
            return fallback(DegradedReason::NoUpstream);
        };
        if upstream.breaker == BreakerState::Open {
            return fallback(DegradedReason::BreakerOpen);
        }
        let time_left = req.deadline.saturating_duration_since(now);
        let needed = upstream.latency.map_or(Duration::ZERO, |l| l.mul_f64(LATENCY_HEADROOM));
        if time_left.is_zero() || time_left < needed {
            return fallback(DegradedReason::DeadlineTooShort);
        }
        if !self.budget.try_take(now) {
            return fallback(DegradedReason::BudgetExhausted);
        }
        Decision::Escalate { time_left }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn budget(per_second: f64, burst: u32) -> RateSettings {
        RateSettings { per_second, burst }
    }

    fn healthy(latency_ms: u64) -> Option<UpstreamView> {
        Some(UpstreamView { breaker: BreakerState::Closed, latency: Some(MS * latency_ms as u32) })
    }

    fn req(confidence: f64, upstream: Option<UpstreamView>, deadline: Instant) -> PolicyInput {
        PolicyInput { outcome: PluginOutcome::Answer { confidence }, threshold: 0.9, upstream, deadline }
    }

    #[test]
    fn confident_answers_stay_local_and_spend_nothing() {
        let t0 = Instant::now();
        let mut p = EscalationPolicy::new(budget(0.0, 1), t0);
        assert_eq!(p.decide(&req(0.9, healthy(5), t0 + 100 * MS), t0), Decision::Local);
        assert_eq!(p.decide(&req(0.99, None, t0), t0), Decision::Local);
        // The one token is still there.
        assert!(matches!(p.decide(&req(0.1, healthy(5), t0 + 100 * MS), t0), Decision::Escalate { .. }));
    }

    #[test]
    fn unsure_answers_escalate_with_the_time_left() {
        let t0 = Instant::now();
        let mut p = EscalationPolicy::new(budget(10.0, 5), t0);
        let d = p.decide(&req(0.5, healthy(5), t0 + 100 * MS), t0 + 20 * MS);
        assert_eq!(d, Decision::Escalate { time_left: 80 * MS });
    }

    #[test]
    fn no_upstream_degrades() {
        let t0 = Instant::now();
        let mut p = EscalationPolicy::new(budget(10.0, 5), t0);
        assert_eq!(
            p.decide(&req(0.5, None, t0 + 100 * MS), t0),
            Decision::Degraded(DegradedReason::NoUpstream)
        );
    }

    #[test]
    fn open_breaker_degrades_and_half_open_probes() {
        let t0 = Instant::now();
        let mut p = EscalationPolicy::new(budget(10.0, 5), t0);
        let mut up = UpstreamView { breaker: BreakerState::Open, latency: None };
        assert_eq!(
            p.decide(&req(0.5, Some(up), t0 + 100 * MS), t0),
            Decision::Degraded(DegradedReason::BreakerOpen)
        );
        up.breaker = BreakerState::HalfOpen;
        assert!(matches!(p.decide(&req(0.5, Some(up), t0 + 100 * MS), t0), Decision::Escalate { .. }));
    }

    #[test]
    fn deadline_must_cover_recent_latency_with_headroom() {
        let t0 = Instant::now();
        let mut p = EscalationPolicy::new(budget(100.0, 100), t0);
        let deadline = t0 + 100 * MS;
        // 40 ms recent latency needs 60 ms: at t0+40 there are 60 left, at t0+41 only 59.
        assert!(matches!(
            p.decide(&req(0.5, healthy(40), deadline), t0 + 40 * MS),
            Decision::Escalate { .. }
        ));
        assert_eq!(
            p.decide(&req(0.5, healthy(40), deadline), t0 + 41 * MS),
            Decision::Degraded(DegradedReason::DeadlineTooShort)
        );
        // Without any latency sample, any time left will do; none left will not.
        let unknown = Some(UpstreamView { breaker: BreakerState::Closed, latency: None });
        assert!(matches!(p.decide(&req(0.5, unknown, deadline), t0 + 99 * MS), Decision::Escalate { .. }));
        assert_eq!(
            p.decide(&req(0.5, unknown, deadline), t0 + 100 * MS),
            Decision::Degraded(DegradedReason::DeadlineTooShort)
        );
    }

    #[test]
    fn budget_runs_out_and_refills_with_time() {
        let t0 = Instant::now();
        let mut p = EscalationPolicy::new(budget(10.0, 2), t0);
        let deadline = t0 + Duration::from_secs(10);
        for _ in 0..2 {
            assert!(matches!(p.decide(&req(0.5, healthy(1), deadline), t0), Decision::Escalate { .. }));
        }
        assert_eq!(
            p.decide(&req(0.5, healthy(1), deadline), t0),
            Decision::Degraded(DegradedReason::BudgetExhausted)
        );
        assert!(matches!(
            p.decide(&req(0.5, healthy(1), deadline), t0 + 100 * MS),
            Decision::Escalate { .. }
        ));
        // A mode switch to a zero budget stops escalation at once.
        p.set_budget(budget(0.0, 0), t0 + Duration::from_secs(5));
        assert_eq!(
            p.decide(&req(0.5, healthy(1), deadline), t0 + Duration::from_secs(6)),
            Decision::Degraded(DegradedReason::BudgetExhausted)
        );
    }

    #[test]
    fn gates_that_fail_do_not_spend_budget() {
        let t0 = Instant::now();
        let mut p = EscalationPolicy::new(budget(0.0, 1), t0);
        let open = Some(UpstreamView { breaker: BreakerState::Open, latency: None });
        p.decide(&req(0.5, open, t0 + 100 * MS), t0);
        p.decide(&req(0.5, healthy(90), t0 + 100 * MS), t0);
        assert!(matches!(p.decide(&req(0.5, healthy(1), t0 + 100 * MS), t0), Decision::Escalate { .. }));
    }

    #[test]
    fn explicit_escalation_takes_the_same_gates() {
        let t0 = Instant::now();
        let mut p = EscalationPolicy::new(budget(10.0, 1), t0);
        let ask = |has_local_answer, upstream| PolicyInput {
            outcome: PluginOutcome::Escalate { has_local_answer },
            threshold: 0.0,
            upstream,
            deadline: t0 + 100 * MS,
        };
        // A threshold of 0 would keep any answer local, but an explicit request escalates.
        assert!(matches!(p.decide(&ask(true, healthy(1)), t0), Decision::Escalate { .. }));
        assert_eq!(p.decide(&ask(true, healthy(1)), t0), Decision::Degraded(DegradedReason::BudgetExhausted));
        // Nothing to fall back on: an explicit error, never silence.
        assert_eq!(p.decide(&ask(false, None), t0), Decision::Fail(DegradedReason::NoUpstream));
    }
}
