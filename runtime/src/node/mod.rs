//! A serving node: the request path, as stages over one per-request context.
//!
//! A request meets these stages in this order, each a function of the request's [`Ctx`]
//! in a file of its own:
//!
//! 1. [`validate`](validate::validate): inputs against the route's declared tensors;
//! 2. [`admit`](admit::admit): a downstream node's fair share, the route's bulkhead and
//!    rate limit, the node-wide limit;
//! 3. [`lookup`](lookup::lookup): the answer cache, and coalescing with identical requests
//!    in flight; on a miss this request leads and runs the rest:
//! 4. [`handle`](handle::handle): the route's plugin in a fresh sandbox instance, its model
//!    calls included;
//! 5. [`decide`](decide::decide): the escalation policy picks the answering tier;
//! 6. [`escalate`](escalate::escalate): the local answer, or the upstream's, or the local one
//!    marked degraded when the upstream fails or time runs out.
//!
//! The whole path runs under the route's deadline. Each stage is timed into the context,
//! and [`observe`] records the finished request (stage times, outcome, tier, what the leader
//! did) in one place. The policy, the mode controller, the breakers and the budgets it
//! consults are sans-IO: they take `now`.
//!
//! Clients reach [`Node::infer`]; downstream nodes reach [`Node::answer_escalation`], the
//! same path with escalation off. [`CurrentNode`] holds the node a reload replaces.

mod admit;
mod auto_threshold;
mod build;
mod context;
mod cost;
mod current;
mod decide;
mod error;
mod escalate;
mod handle;
mod lookup;
mod mode;
mod observe;
mod reply;
mod route;
mod shadow;
mod validate;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use tracing::Instrument;

use self::context::Ctx;
pub use self::context::Origin;
pub use self::current::CurrentNode;
pub use self::error::{NodeError, ServeError};
pub use self::reply::{Degraded, Reply, RequestReceipt};
pub use self::route::Route;
use crate::admission::Admission;
use crate::cache::Cache;
use crate::config::{Mode, ResolvedConfig, UpstreamSettings};
use crate::models::{Batching, ModelStore};
use crate::modes::ModeController;
use crate::policy::EscalationPolicy;
use crate::protocol::{ErrorFrame, EscalationAnswer, EscalationRequest, NamedTensor, StageTiming};
use crate::receipts::ReceiptLog;
use crate::sandbox::Sandbox;
use crate::telemetry::{AnswerTier, RequestOutcome, Stage, Telemetry, TelemetryError, UNKNOWN_ROUTE};
use crate::tensor::Tensor;
use crate::transport::RequestContext;
use crate::upstream::UpstreamClient;

/// The upstream a node escalates to: the client, and the settings it was built from.
struct Upstream {
    client: UpstreamClient,
    settings: UpstreamSettings,
}

/// A serving node: everything a request needs, shared by the HTTP and QUIC listeners.
pub struct Node {
    config: ResolvedConfig,
    routes: BTreeMap<String, Route>,
    models: ModelStore,
    sandbox: Sandbox,
    admission: Admission,
    cache: Cache<Reply, ServeError>,
    policy: Mutex<EscalationPolicy>,
    modes: Mutex<ModeController>,
    upstream: Option<Arc<Upstream>>,
    shadow: Option<shadow::Shadow>,
    receipts: Option<ReceiptLog>,
    batching: Option<Batching>,
    telemetry: Arc<Telemetry>,
    /// The next request's id.
    next_id: AtomicU64,
    /// What local answers save the upstream.
    cost: Mutex<cost::UpstreamCompute>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("name", &self.config.settings.name).finish()
    }
}

impl Node {
    /// This node's name, reported as the tier that answered.
    pub fn name(&self) -> &str {
        &self.config.settings.name
    }

    /// The config it serves.
    pub fn config(&self) -> &ResolvedConfig {
        &self.config
    }

    /// The route named `name`, if it exists.
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.get(name)
    }

    /// Its models.
    pub fn models(&self) -> &ModelStore {
        &self.models
    }

    /// Prometheus text of every metric, the gauges read afresh (thresholds in force, the
    /// upstream's breakers and latency).
    pub fn metrics(&self) -> Result<String, TelemetryError> {
        for route in self.routes.values() {
            for mode in Mode::ALL {
                self.telemetry.set_threshold(&route.name, mode, route.threshold(mode));
            }
        }
        if let Some(up) = &self.upstream {
            for (server, health) in up.client.members() {
                self.telemetry.set_breaker(&server, health.breaker);
            }
            if let Some(latency) = up.client.health().latency() {
                self.telemetry.set_upstream_latency(latency);
            }
        }
        self.telemetry.guest_log_lines_dropped(self.sandbox.stats().log_lines_dropped);
        self.telemetry.render()
    }

    /// Telemetry, for stages timed outside the node (the HTTP response).
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Answers a client's request on `route`, escalating when the policy says so.
    pub async fn infer(
        &self,
        route: &str,
        inputs: Vec<(String, Tensor)>,
        parameters: Vec<(String, String)>,
    ) -> Result<Reply, ServeError> {
        let Some(r) = self.route(route) else {
            self.telemetry.request(UNKNOWN_ROUTE, RequestOutcome::Rejected, AnswerTier::None);
            return Err(ServeError::UnknownRoute(route.to_owned()));
        };
        let ctx = Ctx::new(
            self.new_id(),
            r,
            inputs,
            parameters,
            Instant::now() + r.settings.deadline,
            Origin::Client,
        );
        let span = tracing::info_span!("request", route, node = %self.name());
        self.serve(&ctx).instrument(span).await
    }

    /// Answers an escalation from a downstream node: the same path, never escalating
    /// further, under the deadline the transport gives it.
    pub async fn answer_escalation(
        self: Arc<Self>,
        request: EscalationRequest,
        context: RequestContext,
    ) -> Result<EscalationAnswer, ErrorFrame> {
        let id = request.id;
        let Some(route) = self.route(&request.route) else {
            self.telemetry.request(UNKNOWN_ROUTE, RequestOutcome::Rejected, AnswerTier::None);
            return Err(ServeError::UnknownRoute(request.route).to_frame(id));
        };
        let origin = Origin::Downstream { peer: context.peer.clone(), node: request.node_id.clone() };
        let inputs = request.inputs.into_iter().map(|t| (t.name, t.tensor)).collect();
        // The requester's budget, but never more than this node gives the route itself.
        let deadline = context.deadline.min(context.received + route.settings.deadline);
        let ctx = Ctx::new(self.new_id(), route, inputs, Vec::new(), deadline, origin);
        let span = tracing::info_span!("escalation_in", route = %request.route, from = %context.peer);
        let reply = self.serve(&ctx).instrument(span).await.map_err(|e| e.to_frame(id))?;
        Ok(EscalationAnswer {
            id,
            outputs: reply.outputs.into_iter().map(|(name, tensor)| NamedTensor { name, tensor }).collect(),
            confidence: reply.confidence,
            label: reply.label.as_deref().and_then(|l| l.parse().ok()),
            model_version: reply.models,
            timings: reply
                .request
                .timings
                .into_iter()
                .map(|(stage, micros)| StageTiming { stage: stage.into(), micros })
                .collect(),
        })
    }

    /// Logs `reply`'s receipt if the node keeps a receipt log and `ctx` is in its sample.
    fn log_receipt(&self, ctx: &Ctx<'_>, reply: &Reply) {
        let Some(log) = &self.receipts else { return };
        if !log.samples(ctx.id) {
            return;
        }
        let mut receipt = reply.parameters();
        receipt.insert("route".into(), ctx.route.name.clone().into());
        let at_ms = crate::transport::unix_micros(std::time::SystemTime::now()) / 1000;
        receipt.insert("at_unix_ms".into(), at_ms.into());
        if !log.log(serde_json::Value::Object(receipt).to_string()) {
            self.telemetry.receipt_dropped();
        }
    }

    fn new_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Runs the stages under the request's deadline, then observes the result.
    async fn serve(&self, ctx: &Ctx<'_>) -> Result<Reply, ServeError> {
        let mut result =
            tokio::time::timeout_at(ctx.deadline.into(), self.stages(ctx)).await.unwrap_or_else(|_| {
                Err(ServeError::DeadlineExceeded {
                    route: ctx.route.name.clone(),
                    deadline: ctx.route.settings.deadline,
                })
            });
        if let Ok(reply) = &mut result {
            reply.request.id = format!("{:016x}", ctx.id);
            reply.request.timings = ctx
                .timings
                .recorded()
                .chain([(Stage::Total, ctx.started.elapsed())])
                .map(|(stage, took)| (stage.name(), u64::try_from(took.as_micros()).unwrap_or(u64::MAX)))
                .collect();
            self.log_receipt(ctx, reply);
        }
        observe::finished(self, ctx, &result);
        result
    }

    /// Stages 1 to 3; the cache runs [`Node::compute`] on a miss.
    async fn stages(&self, ctx: &Ctx<'_>) -> Result<Reply, ServeError> {
        validate::validate(ctx)?;
        let _admitted = ctx.stage(Stage::Admission, admit::admit(self, ctx)).await?;
        lookup::lookup(self, ctx).await
    }

    /// Stages 4 to 6: what the leader of a cache miss runs.
    async fn compute(&self, ctx: &Ctx<'_>) -> Result<Reply, ServeError> {
        ctx.lead();
        let outcome = ctx.stage(Stage::Sandbox, handle::handle(self, ctx)).await?;
        let decided = ctx.stage(Stage::Policy, async { decide::decide(self, ctx, &outcome) }).await;
        escalate::escalate(self, ctx, outcome, decided).await
    }
}
