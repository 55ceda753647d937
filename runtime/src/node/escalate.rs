//! Stage 6, escalate: act on the decision. A local answer goes back as it is; an
//! escalation goes to the upstream, giving up early enough to answer locally (marked
//! degraded) before the request's own deadline.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Node;
use super::context::Ctx;
use super::error::ServeError;
use super::reply::{Degraded, Reply};
use crate::cache::CacheStatus;
use crate::policy::{Decision, DegradedReason};
use crate::protocol::{EscalationRequest, NamedTensor};
use crate::sandbox::{Answer, Outcome};
use crate::telemetry::Stage;
use crate::transport;

pub(super) async fn escalate(
    node: &Node,
    ctx: &Ctx<'_>,
    outcome: Outcome,
    decision: Decision,
) -> Result<Reply, ServeError> {
    let local = match outcome {
        Outcome::Answer(a) => Some(a),
        Outcome::Escalate(_) => None,
    };
    let no_answer = |reason, detail| ServeError::NoAnswer { route: ctx.route.name.clone(), reason, detail };
    match decision {
        Decision::Local => local
            .map(|a| local_reply(node, a, None))
            .ok_or_else(|| no_answer(DegradedReason::NoUpstream, None)),
        Decision::Degraded(reason) | Decision::Fail(reason) => local
            .map(|a| local_reply(node, a, Some(Degraded { reason, detail: None })))
            .ok_or_else(|| no_answer(reason, None)),
        Decision::Escalate { time_left } => {
            let confidence = local.as_ref().map(|a| a.confidence);
            match ctx.stage(Stage::Escalation, upstream_reply(node, ctx, confidence, time_left)).await {
                Ok(reply) => Ok(reply),
                Err(detail) => {
                    let reason = DegradedReason::UpstreamFailed;
                    let degraded = Degraded { reason, detail: Some(detail.clone()) };
                    local
                        .map(|a| local_reply(node, a, Some(degraded)))
                        .ok_or_else(|| no_answer(reason, Some(detail)))
                }
            }
        }
    }
}

fn local_reply(node: &Node, answer: Answer, degraded: Option<Degraded>) -> Reply {
    Reply {
        outputs: answer.outputs,
        confidence: answer.confidence,
        label: answer.label,
        tier: node.name().to_owned(),
        escalated: false,
        degraded,
        cache: CacheStatus::Miss,
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
        id: node.next_id.fetch_add(1, Ordering::Relaxed),
        route: ctx.route.name.clone(),
        inputs: ctx
            .inputs
            .iter()
            .map(|(name, tensor)| NamedTensor { name: name.clone(), tensor: tensor.clone() })
            .collect(),
        deadline_unix_us: transport::deadline_in(budget),
        trace: None,
        node_id: node.name().to_owned(),
        local_confidence,
    };
    let answer = upstream.client.escalate(&request).await.map_err(|e| {
        tracing::info!(error = %e, "escalation failed; answering locally");
        e.to_string()
    })?;
    Ok(Reply {
        outputs: answer.outputs.into_iter().map(|t| (t.name, t.tensor)).collect(),
        confidence: answer.confidence,
        label: answer.label.map(|l| l.to_string()),
        tier: upstream.settings.server_name.clone(),
        escalated: true,
        degraded: None,
        cache: CacheStatus::Miss,
    })
}
