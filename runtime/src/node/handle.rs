//! Stage 4, handle: the route's plugin runs the request in a fresh sandbox instance (its
//! model calls included) and answers or asks to escalate.

use std::time::{Duration, Instant};

use tokio::runtime::{Handle, RuntimeFlavor};

use super::Node;
use super::context::Ctx;
use super::error::ServeError;
use crate::contract;
use crate::sandbox::{GuestError, Outcome, Request, RequestError};
use crate::telemetry::Stage;

pub(super) async fn handle(node: &Node, ctx: &Ctx<'_>) -> Result<Outcome, ServeError> {
    let plugin = ctx.route.plugin();
    // The plugin call, its model calls included, ends when the request's time runs out.
    let deadline = ctx.deadline;
    let (outcome, inference) = if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
        run_in_place(node, plugin, ctx.plugin_request(), deadline)
    } else {
        // A current-thread runtime has no other worker to hand its tasks to: run the plugin
        // on the blocking pool, with the request's data owned by that thread.
        let sandbox = node.sandbox.clone();
        let (plugin, route) = (plugin.to_owned(), ctx.route.name.clone());
        let (inputs, parameters) = (ctx.inputs.clone(), ctx.parameters.clone());
        tokio::task::spawn_blocking(move || {
            let request = Request { route: &route, inputs: &inputs, parameters: &parameters };
            sandbox.handle_timed(&plugin, request, deadline.saturating_duration_since(Instant::now()))
        })
        .await
        .map_err(|e| ServeError::Internal(format!("sandbox thread: {e}")))?
    };
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

/// Runs a plugin from a worker of a multi-threaded runtime without stalling the runtime's
/// other tasks for as long as the plugin may run (up to its deadline).
///
/// `block_in_place` runs it right here, after handing this worker's other tasks, and its
/// turn at the I/O driver, to another thread: one thread wake-up per request. Running the
/// plugin here without the handoff would save that wake-up, but tokio does not wake another
/// worker to take over the driver, so a plugin looping to its deadline would stall every
/// connection until then. A round trip to the blocking pool would cost two wake-ups.
fn run_in_place(
    node: &Node,
    plugin: &str,
    request: Request<'_>,
    deadline: Instant,
) -> (Result<Outcome, RequestError>, Duration) {
    tokio::task::block_in_place(|| {
        node.sandbox.handle_timed(plugin, request, deadline.saturating_duration_since(Instant::now()))
    })
}
