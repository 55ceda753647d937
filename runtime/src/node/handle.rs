//! Stage 4, handle: the route's plugin runs the request in a fresh sandbox instance (its
//! model calls included) and answers or asks to escalate.

use std::time::Instant;

use super::Node;
use super::context::Ctx;
use super::error::ServeError;
use crate::contract;
use crate::sandbox::{GuestError, Outcome, RequestError};
use crate::telemetry::Stage;

/// The plugin runs right here, on the worker (or the current-thread runtime) that holds the
/// request: no handoff to another thread. It yields at every epoch tick, so one that loops
/// to its deadline delays the worker's other requests by at most a tick, and its long model
/// runs go to the blocking pool (`sandbox/instance.rs`, `sandbox/inference.rs`).
pub(super) async fn handle(node: &Node, ctx: &Ctx<'_>) -> Result<Outcome, ServeError> {
    let plugin = ctx.route.plugin();
    // The plugin call, its model calls included, ends when the request's time runs out.
    let time_left = ctx.deadline.saturating_duration_since(Instant::now());
    let (outcome, inference) = node.sandbox.handle_async(plugin, ctx.plugin_request(), time_left).await;
    if !inference.is_zero() {
        ctx.timings.add(Stage::Inference, inference);
    }
    let outcome = outcome.map_err(|e| match e {
        RequestError::Plugin { error: GuestError::BadRequest(m), .. } => ServeError::BadRequest(m),
        e => ServeError::Plugin { plugin: plugin.to_owned(), kind: e.kind().name(), message: e.to_string() },
    })?;
    // The route's declared outputs are its answers' contract: a plugin that breaks it fails
    // the request rather than hand the client something else.
    match outcome {
        Outcome::Answer(mut answer) => {
            answer.outputs = contract::local_outputs(&ctx.route.settings, answer.outputs).map_err(|why| {
                ServeError::Plugin { plugin: plugin.to_owned(), kind: "contract", message: why }
            })?;
            Ok(Outcome::Answer(answer))
        }
        escalate => Ok(escalate),
    }
}
