//! Stage 5, decide: the escalation policy picks the tier that answers, from the plugin's
//! outcome, the route's threshold in the current mode, what is known of the upstream and
//! the time left.

use std::time::Instant;

use super::Node;
use super::context::Ctx;
use crate::config::Mode;
use crate::policy::{Decision, PluginOutcome, PolicyInput, UpstreamView};
use crate::sandbox::Outcome;

/// The decision and what it was made against.
#[derive(Debug, Clone, Copy)]
pub(super) struct Decided {
    pub(super) decision: Decision,
    pub(super) threshold: f64,
    pub(super) mode: Mode,
}

pub(super) fn decide(node: &Node, ctx: &Ctx<'_>, outcome: &Outcome) -> Decided {
    let plugin = match outcome {
        Outcome::Answer(a) => PluginOutcome::Answer { confidence: f64::from(a.confidence) },
        Outcome::Escalate(why) => {
            tracing::debug!(reason = %why, "plugin asked to escalate");
            PluginOutcome::Escalate { has_local_answer: false }
        }
    };
    let upstream = match &node.upstream {
        Some(up) if ctx.may_escalate() => {
            Some(UpstreamView { breaker: up.client.breaker_state(), latency: up.client.health().latency() })
        }
        _ => None,
    };
    let mode = node.mode();
    let threshold = ctx.route.threshold(mode);
    let input = PolicyInput { outcome: plugin, threshold, upstream, deadline: ctx.deadline };
    let decision = node.policy.lock().decide(&input, Instant::now());
    tracing::debug!(?decision, "decided");
    Decided { decision, threshold, mode }
}
