//! The per-request context every stage takes: the route resolved once, the request's own
//! data, its deadline, where it came from, and how long each stage took.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::Instrument;

use super::route::Route;
use crate::sandbox::Request;
use crate::telemetry::Stage;
use crate::tensor::Tensor;
use crate::transport::PeerName;

/// Who sent a request, which decides whether it may escalate further.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A client of this node (HTTP): it may escalate.
    Client,
    /// A downstream node escalating to this one: it is answered here, never passed on.
    Downstream {
        /// The downstream node's verified name (from its certificate), which its fair share
        /// is keyed by.
        peer: PeerName,
        /// The name the downstream node gave itself (for logs only: it is not verified).
        node: String,
    },
}

/// Time spent per stage, added up (a stage may run more than once, as the model calls
/// inside the sandbox do).
#[derive(Debug, Default)]
pub(crate) struct Timings {
    nanos: [AtomicU64; Stage::ALL.len()],
}

impl Timings {
    /// Adds `took` to `stage`.
    pub(crate) fn add(&self, stage: Stage, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.nanos[stage.index()].fetch_add(ns, Ordering::Relaxed);
    }

    /// The stages that took any time, in request order.
    pub(crate) fn recorded(&self) -> impl Iterator<Item = (Stage, Duration)> + '_ {
        Stage::ALL.into_iter().filter_map(|s| {
            let ns = self.nanos[s.index()].load(Ordering::Relaxed);
            (ns > 0).then(|| (s, Duration::from_nanos(ns)))
        })
    }
}

/// One request on its way through the node's stages.
#[derive(Debug)]
pub(crate) struct Ctx<'n> {
    /// The node's id for it (also the id of its escalation, if any).
    pub(crate) id: u64,
    /// The route, looked up once.
    pub(crate) route: &'n Route,
    /// Named input tensors.
    pub(crate) inputs: Vec<(String, Tensor)>,
    /// Free-form parameters, for the plugin.
    pub(crate) parameters: Vec<(String, String)>,
    /// When the request must be answered.
    pub(crate) deadline: Instant,
    /// Who sent it.
    pub(crate) origin: Origin,
    /// When it arrived.
    pub(crate) started: Instant,
    /// Time per stage.
    pub(crate) timings: Timings,
    /// Whether this request computed its answer (the cache's leader), rather than taking a
    /// cached or coalesced one: what it did is counted once, by the leader.
    led: AtomicBool,
}

impl<'n> Ctx<'n> {
    pub(super) fn new(
        id: u64,
        route: &'n Route,
        inputs: Vec<(String, Tensor)>,
        parameters: Vec<(String, String)>,
        deadline: Instant,
        origin: Origin,
    ) -> Ctx<'n> {
        Ctx {
            id,
            route,
            inputs,
            parameters,
            deadline,
            origin,
            started: Instant::now(),
            timings: Timings::default(),
            led: AtomicBool::new(false),
        }
    }

    /// Marks this request as the one computing its answer.
    pub(super) fn lead(&self) {
        self.led.store(true, Ordering::Relaxed);
    }

    /// Whether this request computed its answer (see [`Ctx::lead`]).
    pub(crate) fn led(&self) -> bool {
        self.led.load(Ordering::Relaxed)
    }

    /// Whether this request may be sent upstream (only a client's may).
    pub(crate) fn may_escalate(&self) -> bool {
        self.origin == Origin::Client
    }

    /// The request as the plugin sees it.
    pub(crate) fn plugin_request(&self) -> Request<'_> {
        Request { route: &self.route.name, inputs: &self.inputs, parameters: &self.parameters }
    }

    /// Runs one stage: inside a span named after it, its time added to [`Ctx::timings`].
    pub(super) async fn stage<T>(&self, stage: Stage, work: impl Future<Output = T>) -> T {
        let t = Instant::now();
        let out = work.instrument(tracing::debug_span!("stage", name = stage.name())).await;
        self.timings.add(stage, t.elapsed());
        out
    }
}
