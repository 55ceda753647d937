//! The one place a finished request is observed: its stages' times, its outcome, the tier
//! that answered, and what the leader of a coalesced group did (escalations, degraded
//! answers, plugin failures), counted once.

use super::Node;
use super::context::Ctx;
use super::error::ServeError;
use super::reply::Reply;
use crate::policy::DegradedReason;
use crate::telemetry::{AnswerTier, RequestOutcome, Stage};

pub(super) fn finished(node: &Node, ctx: &Ctx<'_>, result: &Result<Reply, ServeError>) {
    let telemetry = &*node.telemetry;
    let route = ctx.route.name.as_str();
    for (stage, took) in ctx.timings.recorded() {
        telemetry.stage(stage, took);
    }
    telemetry.stage(Stage::Total, ctx.started.elapsed());
    let degraded = |reason: DegradedReason| {
        telemetry.degraded(route, reason);
        if reason == DegradedReason::UpstreamFailed {
            telemetry.escalation(route, false);
        }
    };
    match result {
        Ok(reply) => {
            telemetry.cache(route, reply.request.cache);
            if !reply.escalated && reply.degraded.is_none() {
                telemetry.upstream_avoided(route, node.cost.lock().per_request());
            }
            if ctx.led() {
                if let Some(c) = reply.edge_confidence {
                    telemetry.confidence(route, c);
                }
                if reply.escalated {
                    telemetry.escalation(route, true);
                }
                if let Some(d) = &reply.degraded {
                    degraded(d.reason);
                }
            }
        }
        Err(ServeError::Rejected { rejection, .. }) => telemetry.rejection(route, rejection),
        Err(ServeError::Plugin { plugin, kind, .. }) if ctx.led() => telemetry.sandbox_failure(plugin, kind),
        Err(ServeError::NoAnswer { reason, .. }) if ctx.led() => degraded(*reason),
        Err(_) => {}
    }
    let (outcome, tier) = match result {
        Ok(r) if r.degraded.is_some() => (RequestOutcome::Degraded, AnswerTier::Local),
        Ok(r) if r.escalated => (RequestOutcome::Answered, AnswerTier::Upstream),
        Ok(_) => (RequestOutcome::Answered, AnswerTier::Local),
        Err(ServeError::Rejected { .. }) => (RequestOutcome::Rejected, AnswerTier::None),
        Err(_) => (RequestOutcome::Failed, AnswerTier::None),
    };
    telemetry.request(route, outcome, tier);
    if let Err(e) = result {
        tracing::debug!(error = %e, "request failed");
    }
}
