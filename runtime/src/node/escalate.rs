//! Stage 6, escalate: act on the decision. A local answer goes back as it is; an
//! escalation goes to the upstream, giving up early enough to answer locally (marked
//! degraded) before the request's own deadline.

use std::time::Duration;

use super::Node;
use super::context::Ctx;
use super::decide::Decided;
use super::error::ServeError;
use super::reply::{Degraded, Reply};
use super::shadow;
use crate::contract;
use crate::policy::{Decision, DegradedReason};
use crate::protocol::{EscalationRequest, NamedTensor};
use crate::sandbox::{Answer, Outcome};
use crate::telemetry::Stage;

pub(super) async fn escalate(
    node: &Node,
    ctx: &Ctx<'_>,
    outcome: Outcome,
    decided: Decided,
) -> Result<Reply, ServeError> {
    let local = match outcome {
        Outcome::Answer(a) => Some(a),
        Outcome::Escalate(_) => None,
    };
    let edge_confidence = local.as_ref().map(|a| a.confidence);
    let no_answer = |reason, detail| ServeError::NoAnswer { route: ctx.route.name.clone(), reason, detail };
    let local_reply = |answer: Answer, degraded: Option<Degraded>| Reply {
        outputs: answer.outputs,
        confidence: answer.confidence,
        label: answer.label,
        tier: node.name().to_owned(),
        escalated: false,
        degraded,
        edge_confidence,
        threshold: decided.threshold,
        mode: decided.mode,
        models: ctx.route.model_version().to_owned(),
        upstream_timings: Vec::new(),
        request: Default::default(),
    };
    match decided.decision {
        Decision::Local => {
            let reply = local
                .map(|a| local_reply(a, None))
                .ok_or_else(|| no_answer(DegradedReason::NoUpstream, None))?;
            shadow::after_local_answer(node, ctx, reply.label.as_deref(), reply.confidence);
            Ok(reply)
        }
        Decision::Degraded(reason) | Decision::Fail(reason) => local
            .map(|a| local_reply(a, Some(Degraded { reason, detail: None })))
            .ok_or_else(|| no_answer(reason, None)),
        Decision::Escalate { time_left } => {
            let asked =
                ctx.stage(Stage::Escalation, upstream_reply(node, ctx, edge_confidence, time_left)).await;
            match asked {
                Ok(mut reply) => {
                    (reply.edge_confidence, reply.threshold, reply.mode) =
                        (edge_confidence, decided.threshold, decided.mode);
                    let mine = local.as_ref().and_then(|a| Some((a.label.as_deref()?, a.confidence)));
                    shadow::after_escalation(node, ctx, mine, reply.label.as_deref());
                    Ok(reply)
                }
                Err(detail) => {
                    let reason = DegradedReason::UpstreamFailed;
                    let degraded = Degraded { reason, detail: Some(detail.clone()) };
                    local
                        .map(|a| local_reply(a, Some(degraded)))
                        .ok_or_else(|| no_answer(reason, Some(detail)))
                }
            }
        }
    }
}

/// Sends the request upstream; the failure, as text, if it got no answer.
async fn upstream_reply(
    node: &Node,
    ctx: &Ctx<'_>,
    local_confidence: Option<f32>,
    time_left: Duration,
) -> Result<Reply, String> {
    let Some(upstream) = &node.upstream else { return Err("no upstream".into()) };
    // Keep a tenth of what is left (at most 5 ms) to build the degraded answer.
    let budget =
        (time_left - (time_left / 10).min(Duration::from_millis(5))).min(upstream.settings.request_timeout);
    let request = EscalationRequest {
        id: ctx.id,
        route: ctx.route.name.clone(),
        inputs: ctx
            .inputs
            .iter()
            .map(|(name, tensor)| NamedTensor { name: name.clone(), tensor: tensor.clone() })
            .collect(),
        budget_us: crate::protocol::budget_us(budget),
        trace: None,
        node_id: node.name().to_owned(),
        local_confidence,
    };
    let mut answer = upstream.client.escalate(&request).await.map_err(|e| {
        tracing::info!(error = %e, "escalation failed; answering locally");
        e.summary()
    })?;
    let timings: Vec<(String, u64)> =
        std::mem::take(&mut answer.timings).into_iter().map(|t| (t.stage, t.micros)).collect();
    if let Some(&(_, us)) = timings.iter().find(|(stage, _)| stage == Stage::Sandbox.name()) {
        node.cost.lock().record_upstream_compute(Duration::from_micros(us));
    }
    let models = std::mem::take(&mut answer.model_version);
    // The route's answer contract holds for escalated answers too: one that cannot carry the
    // declared outputs is a failed escalation, and the client gets the local answer.
    let answer = contract::upstream_answer(&ctx.route.settings, answer).map_err(|why| {
        tracing::info!(%why, "the upstream's answer does not fit the route; answering locally");
        format!("the upstream's answer does not fit the route: {why}")
    })?;
    Ok(Reply {
        outputs: answer.outputs,
        confidence: answer.confidence,
        label: answer.label,
        tier: upstream.settings.server_name.clone(),
        escalated: true,
        degraded: None,
        // Set by the caller, which knows the decision.
        edge_confidence: None,
        threshold: 0.0,
        mode: crate::config::Mode::Normal,
        models,
        upstream_timings: timings,
        request: Default::default(),
    })
}
