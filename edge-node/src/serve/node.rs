//! The request path of a node, without HTTP: admission, cache with coalescing, the plugin in
//! the sandbox, the escalation policy, escalation over QUIC, telemetry.
//!
//! The HTTP front door ([`super::http`]) and the QUIC listener both call into a [`Node`]; the
//! QUIC side runs the same path with escalation turned off, so a central node (a config
//! without upstream) answers what it is sent with its own plugin and model.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cascade_runtime::config::{ResolvedConfig, RouteSettings, TensorDecl, UpstreamKind};
use cascade_runtime::protocol::{
    self, ErrorFrame, EscalationAnswer, EscalationRequest, NamedTensor, StageTiming,
};
use cascade_runtime::transport::{self, ClientConfig, RequestContext, ServerConfig, TierServer, TlsIdentity};
use cascade_runtime::upstream::{self, EscalationError, UpstreamClient};
use cascade_runtime::{
    Admission, AnswerTier, Backend, BackendKind, BatchSettings, BatchingBackend, BreakerState, Cache,
    CacheKey, CacheStatus, Decision, DegradedReason, EscalationPolicy, FairShare, Lookup, Mode, ModeChange,
    ModeController, ModeSignals, ModelInfo, Outcome, PluginLimits, PluginOutcome, PolicyInput, Rejection,
    Request, RequestOutcome, Sandbox, SandboxConfig, Stage, Telemetry, Tensor, TractBackend, UNKNOWN_ROUTE,
    UpstreamHealth, UpstreamView, WgpuBackend,
};
use parking_lot::Mutex;
use tracing::Instrument;

/// Bytes of answers the cache may hold (outputs are small: a digit's ten probabilities).
const CACHE_BUDGET_BYTES: usize = 64 << 20;

/// How often the mode controller samples the node's signals.
const MODE_TICK: Duration = Duration::from_millis(100);

/// Why a node could not be built from its config.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The sandbox could not be created, or a model or plugin could not be loaded into it.
    #[error("sandbox: {0}")]
    Sandbox(#[from] cascade_runtime::LoadError),
    /// A model asks for a backend that cannot run it here and may not fall back to tract.
    #[error("model {model}: backend {backend} cannot run it ({why}) and fallback_to_tract is false")]
    Backend {
        /// Model name.
        model: String,
        /// The backend asked for.
        backend: String,
        /// Why it cannot: no adapter, or an op its kernels do not cover.
        why: String,
    },
    /// The telemetry registry could not be built.
    #[error("telemetry: {0}")]
    Telemetry(#[from] cascade_runtime::TelemetryError),
    /// The upstream client or the QUIC listener could not be set up.
    #[error("quic: {0}")]
    Transport(#[from] transport::TransportError),
    /// The KServe upstream's HTTP client could not be set up.
    #[error("kserve upstream: {0}")]
    Kserve(#[from] upstream::KserveError),
}

/// Why a request got no answer. Each maps to one HTTP status ([`ServeError::status`]).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServeError {
    /// No route by that name.
    #[error("unknown route `{0}`")]
    UnknownRoute(String),
    /// Admission refused the request.
    #[error("route `{route}`: {rejection}")]
    Rejected {
        /// Route.
        route: String,
        /// Why.
        rejection: Rejection,
    },
    /// The request itself is malformed (reported by the front door or the plugin).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The plugin failed on this request.
    #[error("plugin `{plugin}` failed ({kind}): {message}")]
    Plugin {
        /// Plugin name.
        plugin: String,
        /// The sandbox's error kind (`trap`, `timeout`, ...).
        kind: &'static str,
        /// Detail.
        message: String,
    },
    /// The request's deadline passed before it could be answered.
    #[error("route `{route}`: deadline of {deadline:?} exceeded")]
    DeadlineExceeded {
        /// Route.
        route: String,
        /// The route's deadline.
        deadline: Duration,
    },
    /// The plugin produced no local answer and the request could not be escalated.
    #[error("route `{route}`: no local answer and no escalation ({reason}){}", detail_suffix(detail))]
    NoAnswer {
        /// Route.
        route: String,
        /// Why it did not escalate, or that escalating failed.
        reason: DegradedReason,
        /// The upstream's failure, when there was one.
        detail: Option<String>,
    },
    /// A failure of this node (a sandbox thread lost).
    #[error("internal: {0}")]
    Internal(String),
}

fn detail_suffix(detail: &Option<String>) -> String {
    detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default()
}

impl ServeError {
    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            ServeError::UnknownRoute(_) => 404,
            ServeError::Rejected { rejection, .. } => rejection.status(),
            ServeError::BadRequest(_) => 400,
            ServeError::Plugin { .. } | ServeError::Internal(_) => 500,
            ServeError::DeadlineExceeded { .. } => 504,
            ServeError::NoAnswer { .. } => 503,
        }
    }

    /// `Retry-After` seconds, when retrying later can help.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            ServeError::Rejected { rejection, .. } => rejection.retry_after_secs(),
            ServeError::NoAnswer { .. } => Some(1),
            _ => None,
        }
    }

    fn to_frame(&self, id: u64) -> ErrorFrame {
        let (kind, retryable) = match self {
            ServeError::UnknownRoute(_) => (protocol::ErrorKind::UnknownRoute, false),
            ServeError::Rejected { .. } => (protocol::ErrorKind::Overloaded, true),
            ServeError::BadRequest(_) => (protocol::ErrorKind::BadRequest, false),
            ServeError::Plugin { .. } | ServeError::Internal(_) => (protocol::ErrorKind::Internal, false),
            ServeError::DeadlineExceeded { .. } => (protocol::ErrorKind::DeadlineExceeded, false),
            ServeError::NoAnswer { .. } => (protocol::ErrorKind::Unavailable, true),
        };
        ErrorFrame { id, kind, retryable, message: self.to_string() }
    }
}

/// Why an answer is degraded.
#[derive(Debug, Clone, PartialEq)]
pub struct Degraded {
    /// The policy's reason.
    pub reason: DegradedReason,
    /// The upstream's failure, when escalating was tried.
    pub detail: Option<String>,
}

/// An answer and how it was produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// Named output tensors.
    pub outputs: Vec<(String, Tensor)>,
    /// The answering plugin's confidence.
    pub confidence: f32,
    /// The answer's label, if the plugin gave one.
    pub label: Option<String>,
    /// Name of the node that answered (this node's, or the upstream's certificate name).
    pub tier: String,
    /// Whether the upstream answered.
    pub escalated: bool,
    /// Set when the local answer stands in for an escalation that did not happen.
    pub degraded: Option<Degraded>,
    /// Cache hit, miss (computed for this request) or coalesced with an identical one.
    pub cache: CacheStatus,
}

fn weigh(reply: &Reply) -> usize {
    let tensors: usize =
        reply.outputs.iter().map(|(n, t)| n.len() + t.data().len() + 8 * t.shape().len()).sum();
    tensors + reply.tier.len() + reply.label.as_ref().map_or(0, String::len) + 64
}

/// Degraded answers reach every coalesced follower but are not cached: once the upstream is
/// back, the next identical request should escalate again.
fn cacheable(reply: &Reply) -> bool {
    reply.degraded.is_none()
}

/// A serving node: everything a request needs, shared by the HTTP and QUIC listeners.
pub struct Node {
    config: ResolvedConfig,
    sandbox: Sandbox,
    models: BTreeMap<String, ModelInfo>,
    admission: Admission,
    cache: Cache<Reply, ServeError>,
    policy: Mutex<EscalationPolicy>,
    modes: Mutex<ModeController>,
    health: Mutex<UpstreamHealth>,
    upstream: Option<UpstreamClient>,
    batching: Option<BatchSettings>,
    /// Each route's capacity, shared fairly among the edges escalating to this node.
    shares: BTreeMap<String, Arc<FairShare>>,
    telemetry: Arc<Telemetry>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("name", &self.config.settings.name).finish()
    }
}

impl Node {
    /// Builds a node: prepares the models, loads the plugins, connects (lazily) to the
    /// upstream, and starts the mode controller. Must be called inside a tokio runtime.
    pub fn new(config: ResolvedConfig) -> Result<Arc<Node>, NodeError> {
        Node::build(config, None)
    }

    /// Builds the node that replaces this one on a reload: its metrics carry on (counters
    /// do not restart), and a mode an admin pinned stays pinned. Cache, admission and
    /// upstream state start afresh, as the new config may change any of them.
    pub fn successor(&self, config: ResolvedConfig) -> Result<Arc<Node>, NodeError> {
        let node = Node::build(config, Some(self.telemetry.clone()))?;
        if let Some(mode) = self.pinned_mode() {
            // The same pin, carried over: not a new switch to count.
            node.modes.lock().pin(mode, Instant::now());
            node.enter(mode);
        }
        Ok(node)
    }

    fn build(config: ResolvedConfig, telemetry: Option<Arc<Telemetry>>) -> Result<Arc<Node>, NodeError> {
        let now = Instant::now();
        let settings = &config.settings;
        // Admission lets at most `max_in_flight` requests run at once, each in its own
        // instance: a pool of that size means a request that got in always gets an instance.
        let sandbox = Sandbox::new(SandboxConfig {
            max_instances: settings.max_in_flight,
            ..SandboxConfig::default()
        })?;
        let telemetry = match telemetry {
            Some(t) => t,
            None => Arc::new(Telemetry::new()?),
        };
        let tract: Arc<dyn Backend> = Arc::new(TractBackend::new());
        // One pool of batching threads per model; each runs one batch at a time, so as many
        // as there are cores keep them all busy. Every admitted request may wait on a model
        // at once, so the queue holds them all: the batcher never refuses an admitted one.
        let batching = settings.batching.map(|b| {
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            let admitted = usize::try_from(settings.max_in_flight).unwrap_or(usize::MAX);
            let batch =
                BatchSettings::new(usize::try_from(b.max_batch).unwrap_or(usize::MAX), b.max_delay, cores)
                    .calibrated(b.calibrate);
            let max_waiting = batch.max_waiting.max(admitted);
            batch.max_waiting(max_waiting)
        });
        let batched = |backend: Arc<dyn Backend>| -> Arc<dyn Backend> {
            match &batching {
                Some(b) => {
                    Arc::new(BatchingBackend::new(backend, b.clone(), Some(telemetry.batch_observer())))
                }
                None => backend,
            }
        };
        let mut models = BTreeMap::new();
        for (name, m) in &config.models {
            let digest = m.digest.to_string();
            let software = crate::backend_check::prefer_tract_over_software_adapter(m);
            if let Some(why) = &software {
                tracing::warn!(model = %name, reason = %why, "running on tract, which is faster on a CPU (fallback_to_tract)");
            }
            let prepared = if m.spec.backend == BackendKind::Wgpu && software.is_none() {
                // One device per process, opened by the first model that asks for it.
                let attempt = WgpuBackend::shared()
                    .map_err(cascade_runtime::LoadError::from)
                    .and_then(|gpu| sandbox.add_model(name, &m.spec.path, &digest, &*batched(Arc::new(gpu))));
                match attempt {
                    Ok(prepared) => prepared,
                    // Only the backend's refusals fall back: a bad file fails on tract too.
                    Err(cascade_runtime::LoadError::Model(e)) if m.spec.fallback_to_tract => {
                        tracing::warn!(model = %name, reason = %e, "wgpu cannot run the model; running on tract");
                        sandbox.add_model(name, &m.spec.path, &digest, &*batched(tract.clone()))?
                    }
                    Err(cascade_runtime::LoadError::Model(e)) => {
                        return Err(NodeError::Backend {
                            model: name.clone(),
                            backend: "wgpu".into(),
                            why: e.to_string(),
                        });
                    }
                    Err(e) => return Err(e.into()),
                }
            } else {
                sandbox.add_model(name, &m.spec.path, &digest, &*batched(tract.clone()))?
            };
            models.insert(name.clone(), prepared.info().clone());
        }
        for (name, p) in &config.plugins {
            let spec = cascade_runtime::PluginSpec {
                name: name.clone(),
                file: p.spec.path.clone(),
                sha256: p.digest.to_string(),
                models: p
                    .spec
                    .models
                    .iter()
                    .filter_map(|m| config.models.get(m).map(|r| (m.clone(), r.digest.to_string())))
                    .collect(),
                config: p.spec.config.clone(),
                logging: true,
                limits: PluginLimits {
                    max_memory_bytes: usize::try_from(p.spec.memory_limit_bytes).unwrap_or(usize::MAX),
                    deadline: p.spec.deadline,
                    ..PluginLimits::default()
                },
            };
            sandbox.load_plugin(&spec)?;
        }
        let upstream = match &settings.upstream {
            Some(up) => {
                let breaker = upstream::BreakerConfig {
                    failure_threshold: up.breaker_failure_threshold,
                    open_for: up.breaker_open,
                    half_open_probes: up.breaker_half_open_probes,
                    latency_limit: up.request_timeout,
                };
                let retry =
                    upstream::RetryConfig { ratio: up.retry_budget, ..upstream::RetryConfig::default() };
                match &up.kind {
                    UpstreamKind::Quic(quic) => {
                        let identity = TlsIdentity::from_files(&quic.cert, &quic.key, &quic.ca)?;
                        let clients = quic
                            .addresses
                            .iter()
                            .map(|addr| {
                                let mut c = ClientConfig::new(*addr, up.server_name.clone());
                                c.connect_timeout = up.connect_timeout;
                                c
                            })
                            .collect();
                        let cfg = upstream::UpstreamConfig { upstreams: clients, breaker, retry };
                        Some(UpstreamClient::new(&identity, cfg)?)
                    }
                    UpstreamKind::Kserve(kserve) => {
                        let server = upstream::KserveConfig {
                            url: kserve.url.clone(),
                            model: kserve.model.clone(),
                            connect_timeout: up.connect_timeout,
                        };
                        let cfg = upstream::KserveUpstreamConfig { servers: vec![server], breaker, retry };
                        Some(UpstreamClient::kserve(cfg)?)
                    }
                }
            }
            None => None,
        };
        telemetry.set_mode(Mode::Normal);
        let node = Arc::new(Node {
            admission: Admission::from_settings(settings, now),
            cache: Cache::with_filter(CACHE_BUDGET_BYTES, weigh, cacheable),
            policy: Mutex::new(EscalationPolicy::new(
                settings.modes.switches(Mode::Normal).escalation_budget,
                now,
            )),
            modes: Mutex::new(ModeController::new(&settings.modes, now)),
            health: Mutex::new(UpstreamHealth::new()),
            upstream,
            batching,
            shares: settings
                .routes
                .iter()
                .map(|(name, r)| (name.clone(), FairShare::new(r.max_in_flight.saturating_add(r.queue_len))))
                .collect(),
            telemetry,
            next_id: AtomicU64::new(1),
            sandbox,
            models,
            config,
        });
        if node.config.settings.modes.automatic {
            tokio::spawn(mode_loop(Arc::downgrade(&node)));
        }
        Ok(node)
    }

    /// This node's name, reported as the tier that answered.
    pub fn name(&self) -> &str {
        &self.config.settings.name
    }

    /// The config it serves.
    pub fn config(&self) -> &ResolvedConfig {
        &self.config
    }

    /// The route's settings, if it exists.
    pub fn route(&self, route: &str) -> Option<&RouteSettings> {
        self.config.settings.routes.get(route)
    }

    /// The models a route's plugin may call, with their tensors.
    pub fn route_models(&self, route: &str) -> Vec<&ModelInfo> {
        let Some(r) = self.route(route) else { return Vec::new() };
        let Some(p) = self.config.plugins.get(&r.plugin) else { return Vec::new() };
        p.spec.models.iter().filter_map(|m| self.models.get(m)).collect()
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.modes.lock().mode()
    }

    /// Prometheus text of every metric.
    pub fn metrics(&self) -> Result<String, cascade_runtime::TelemetryError> {
        self.telemetry.render()
    }

    /// Telemetry, for stages timed outside the node (the HTTP response).
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Answers a client's request on `route`, escalating when the policy says so.
    pub async fn infer(
        self: &Arc<Self>,
        route: &str,
        inputs: Vec<(String, Tensor)>,
        parameters: Vec<(String, String)>,
    ) -> Result<Reply, ServeError> {
        let Some(settings) = self.route(route) else {
            self.telemetry.request(UNKNOWN_ROUTE, RequestOutcome::Rejected, AnswerTier::None);
            return Err(ServeError::UnknownRoute(route.to_owned()));
        };
        let deadline = Instant::now() + settings.deadline;
        let span = tracing::info_span!("request", route, node = %self.name());
        self.run(route, inputs, parameters, deadline, true).instrument(span).await
    }

    /// Answers an escalation from a downstream node: the same path, never escalating further.
    async fn answer_escalation(
        self: Arc<Self>,
        request: EscalationRequest,
        context: RequestContext,
    ) -> Result<EscalationAnswer, ErrorFrame> {
        let id = request.id;
        if self.route(&request.route).is_none() {
            self.telemetry.request(UNKNOWN_ROUTE, RequestOutcome::Rejected, AnswerTier::None);
            return Err(ServeError::UnknownRoute(request.route).to_frame(id));
        }
        // One edge may not take every place while others wait (the share outlives the run).
        let peer = context.remote.to_string();
        let _share = match self.shares.get(&request.route).map(|s| s.try_admit(&peer)) {
            Some(Err(why)) => {
                tracing::debug!(%peer, route = %request.route, %why, "escalation refused");
                let rejection = match why {
                    cascade_runtime::ShareRejection::OverShare { .. } => Rejection::OverShare,
                    // Every place taken: the node is busy, not this edge greedy.
                    cascade_runtime::ShareRejection::Full { .. } => Rejection::QueueFull,
                };
                self.telemetry.rejection(&request.route, &rejection);
                self.telemetry.request(&request.route, RequestOutcome::Rejected, AnswerTier::None);
                return Err(ServeError::Rejected { route: request.route, rejection }.to_frame(id));
            }
            Some(Ok(permit)) => Some(permit),
            None => None,
        };
        let started = Instant::now();
        let inputs = request.inputs.into_iter().map(|t| (t.name, t.tensor)).collect();
        let span = tracing::info_span!("escalation_in", route = %request.route, from = %request.node_id);
        let reply = self
            .run(&request.route, inputs, Vec::new(), context.deadline, false)
            .instrument(span)
            .await
            .map_err(|e| e.to_frame(id))?;
        Ok(EscalationAnswer {
            id,
            outputs: reply.outputs.into_iter().map(|(name, tensor)| NamedTensor { name, tensor }).collect(),
            confidence: reply.confidence,
            label: reply.label.as_deref().and_then(|l| l.parse().ok()),
            model_version: self.model_version(&request.route),
            timings: vec![StageTiming {
                stage: "total".into(),
                micros: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            }],
        })
    }

    /// The route's plugin and model digests, short: what produced an answer.
    fn model_version(&self, route: &str) -> String {
        let Some(r) = self.route(route) else { return String::new() };
        let Some(p) = self.config.plugins.get(&r.plugin) else { return String::new() };
        let mut v = format!("{}@{:.12}", r.plugin, p.digest.to_string());
        for m in &p.spec.models {
            if let Some(model) = self.config.models.get(m) {
                v.push_str(&format!(" {m}@{:.12}", model.digest.to_string()));
            }
        }
        v
    }

    async fn run(
        self: &Arc<Self>,
        route: &str,
        inputs: Vec<(String, Tensor)>,
        parameters: Vec<(String, String)>,
        deadline: Instant,
        escalate: bool,
    ) -> Result<Reply, ServeError> {
        let started = Instant::now();
        let result = tokio::time::timeout_at(
            deadline.into(),
            self.run_inner(route, inputs, parameters, deadline, escalate),
        )
        .await
        .unwrap_or_else(|_| {
            let deadline = self.route(route).map_or(Duration::ZERO, |r| r.deadline);
            Err(ServeError::DeadlineExceeded { route: route.to_owned(), deadline })
        });
        self.telemetry.stage(Stage::Total, started.elapsed());
        let (outcome, tier) = match &result {
            Ok(r) if r.degraded.is_some() => (RequestOutcome::Degraded, AnswerTier::Local),
            Ok(r) if r.escalated => (RequestOutcome::Answered, AnswerTier::Upstream),
            Ok(_) => (RequestOutcome::Answered, AnswerTier::Local),
            Err(ServeError::Rejected { .. }) => (RequestOutcome::Rejected, AnswerTier::None),
            Err(_) => (RequestOutcome::Failed, AnswerTier::None),
        };
        self.telemetry.request(route, outcome, tier);
        if let Err(e) = &result {
            tracing::debug!(error = %e, "request failed");
        }
        result
    }

    async fn run_inner(
        self: &Arc<Self>,
        route: &str,
        inputs: Vec<(String, Tensor)>,
        parameters: Vec<(String, String)>,
        deadline: Instant,
        escalate: bool,
    ) -> Result<Reply, ServeError> {
        if let Some(settings) = self.route(route) {
            check_declared_inputs(&settings.inputs, &inputs).map_err(ServeError::BadRequest)?;
        }
        let t = Instant::now();
        let admitted = self.admission.admit(route, t).instrument(tracing::debug_span!("admission")).await;
        self.telemetry.stage(Stage::Admission, t.elapsed());
        let _permit = admitted.map_err(|rejection| {
            self.telemetry.rejection(route, &rejection);
            ServeError::Rejected { route: route.to_owned(), rejection }
        })?;

        let settings = self.route(route).ok_or_else(|| ServeError::UnknownRoute(route.to_owned()))?;
        let key = CacheKey::for_route(&self.config, route, &input_bytes(&inputs, &parameters))
            .ok_or_else(|| ServeError::UnknownRoute(route.to_owned()))?;
        let t = Instant::now();
        let node = self.clone();
        let route_owned = route.to_owned();
        let Lookup { mut value, status } = self
            .cache
            .get_or_compute(key, settings.cache_ttl, move || async move {
                node.compute(&route_owned, inputs, parameters, deadline, escalate).await
            })
            .instrument(tracing::debug_span!("cache"))
            .await?;
        if status != CacheStatus::Miss {
            self.telemetry.stage(Stage::Cache, t.elapsed());
        }
        self.telemetry.cache(route, status);
        value.cache = status;
        Ok(value)
    }

    /// The cache leader's work: the plugin, the policy, perhaps the escalation.
    async fn compute(
        self: Arc<Self>,
        route: &str,
        inputs: Vec<(String, Tensor)>,
        parameters: Vec<(String, String)>,
        deadline: Instant,
        escalate: bool,
    ) -> Result<Reply, ServeError> {
        let settings = self.route(route).ok_or_else(|| ServeError::UnknownRoute(route.to_owned()))?;
        let plugin = settings.plugin.clone();
        let request = Request { route: route.to_owned(), inputs, parameters };

        // wasmtime runs synchronously for up to the plugin's deadline (see `run_sandbox`).
        let t = Instant::now();
        let span = tracing::debug_span!("sandbox", plugin = %settings.plugin);
        let (outcome, request) = if tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread
        {
            let _entered = span.enter();
            let outcome = self.run_sandbox(&plugin, &request);
            (outcome, request)
        } else {
            let node = self.clone();
            tokio::task::spawn_blocking(move || {
                let (outcome, inference) = node.sandbox.handle_timed(&plugin, &request);
                node.record_inference(inference);
                (outcome, request)
            })
            .instrument(span)
            .await
            .map_err(|e| ServeError::Internal(format!("sandbox thread: {e}")))?
        };
        self.telemetry.stage(Stage::Sandbox, t.elapsed());
        let outcome = outcome.map_err(|e| {
            let kind = e.kind().name();
            self.telemetry.sandbox_failure(&settings.plugin, kind);
            match &e {
                cascade_runtime::RequestError::Plugin {
                    error: cascade_runtime::GuestError::BadRequest(m),
                    ..
                } => ServeError::BadRequest(m.clone()),
                _ => ServeError::Plugin { plugin: settings.plugin.clone(), kind, message: e.to_string() },
            }
        })?;

        let (local, plugin_outcome) = match outcome {
            Outcome::Answer(a) => {
                let confidence = f64::from(a.confidence);
                (Some(a), PluginOutcome::Answer { confidence })
            }
            Outcome::Escalate(why) => {
                tracing::debug!(reason = %why, "plugin asked to escalate");
                (None, PluginOutcome::Escalate { has_local_answer: false })
            }
        };
        let t = Instant::now();
        let upstream = if escalate {
            self.upstream.as_ref().map(|u| UpstreamView {
                breaker: if u.available() { BreakerState::Closed } else { BreakerState::Open },
                latency: self.health.lock().latency(),
            })
        } else {
            None
        };
        let input = PolicyInput {
            outcome: plugin_outcome,
            threshold: settings.threshold(self.mode()),
            upstream,
            deadline,
        };
        let decision = {
            let _span = tracing::debug_span!("policy").entered();
            let decision = self.policy.lock().decide(&input, Instant::now());
            tracing::debug!(?decision, "decided");
            decision
        };
        self.telemetry.stage(Stage::Policy, t.elapsed());

        let local_reply = |degraded: Option<Degraded>| {
            local.clone().map(|a| Reply {
                outputs: a.outputs,
                confidence: a.confidence,
                label: a.label,
                tier: self.name().to_owned(),
                escalated: false,
                degraded,
                cache: CacheStatus::Miss,
            })
        };
        let no_answer = |reason, detail| ServeError::NoAnswer { route: route.to_owned(), reason, detail };
        match decision {
            Decision::Local => local_reply(None).ok_or_else(|| no_answer(DegradedReason::NoUpstream, None)),
            Decision::Degraded(reason) | Decision::Fail(reason) => {
                self.telemetry.degraded(route, reason);
                local_reply(Some(Degraded { reason, detail: None })).ok_or_else(|| no_answer(reason, None))
            }
            Decision::Escalate { time_left } => {
                let local_confidence = local.as_ref().map(|a| a.confidence);
                match self.escalate(route, request.inputs, local_confidence, time_left).await {
                    Ok(reply) => Ok(reply),
                    Err(detail) => {
                        let reason = DegradedReason::UpstreamFailed;
                        self.telemetry.degraded(route, reason);
                        local_reply(Some(Degraded { reason, detail: Some(detail.clone()) }))
                            .ok_or_else(|| no_answer(reason, Some(detail)))
                    }
                }
            }
        }
    }

    /// Runs a plugin from a worker of a multi-threaded runtime without stalling the
    /// runtime's other tasks for as long as the plugin may run (up to its deadline).
    ///
    /// `block_in_place` runs it right here, after handing this worker's other tasks, and its
    /// turn at the I/O driver, to another thread: one thread wake-up per request. Running
    /// the plugin here without the handoff saves about 12 µs of the ~90 µs sequential
    /// request (`edge-node bench edge`), but tokio does not wake another worker to take over
    /// the driver, so a plugin looping to its deadline stalled every connection until then
    /// (the hostile-plugin serve test caught it). A round trip to the blocking pool would
    /// cost two wake-ups (the batcher's calibration measures that round trip: `handoff_us`
    /// in the node's log).
    fn run_sandbox(&self, plugin: &str, request: &Request) -> Result<Outcome, cascade_runtime::RequestError> {
        let (outcome, inference) = tokio::task::block_in_place(|| self.sandbox.handle_timed(plugin, request));
        self.record_inference(inference);
        outcome
    }

    /// The plugin's model calls, inside its sandbox stage (none if it made none).
    fn record_inference(&self, took: Duration) {
        if !took.is_zero() {
            self.telemetry.stage(Stage::Inference, took);
        }
    }

    /// Sends the request upstream, giving up early enough to answer locally before the
    /// request's own deadline.
    async fn escalate(
        &self,
        route: &str,
        inputs: Vec<(String, Tensor)>,
        local_confidence: Option<f32>,
        time_left: Duration,
    ) -> Result<Reply, String> {
        let Some(upstream) = &self.upstream else { return Err("no upstream".into()) };
        let up = self.config.settings.upstream.as_ref().ok_or("no upstream settings")?;
        // Keep a tenth of what is left (at most 5 ms) to build the degraded answer.
        let budget = (time_left - (time_left / 10).min(Duration::from_millis(5))).min(up.request_timeout);
        let request = EscalationRequest {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            route: route.to_owned(),
            inputs: inputs.into_iter().map(|(name, tensor)| NamedTensor { name, tensor }).collect(),
            deadline_unix_us: transport::deadline_in(budget),
            trace: None,
            node_id: self.name().to_owned(),
            local_confidence,
        };
        let t = Instant::now();
        let result = tokio::time::timeout(budget, upstream.escalate(&request))
            .instrument(tracing::debug_span!("escalation"))
            .await
            .unwrap_or(Err(EscalationError::DeadlineExceeded));
        let took = t.elapsed();
        self.telemetry.stage(Stage::Escalation, took);
        self.telemetry.escalation(route, result.is_ok());
        match result {
            Ok(answer) => {
                self.health.lock().record_success(took);
                Ok(Reply {
                    outputs: answer.outputs.into_iter().map(|t| (t.name, t.tensor)).collect(),
                    confidence: answer.confidence,
                    label: answer.label.map(|l| l.to_string()),
                    tier: up.server_name.clone(),
                    escalated: true,
                    degraded: None,
                    cache: CacheStatus::Miss,
                })
            }
            Err(e) => {
                self.health.lock().record_failure();
                tracing::info!(error = %e, "escalation failed; answering locally");
                Err(e.to_string())
            }
        }
    }

    /// The mode an admin pinned, if any.
    pub fn pinned_mode(&self) -> Option<Mode> {
        self.modes.lock().pinned()
    }

    /// Pins the mode (an admin call), or returns to automatic switching with `None`.
    pub fn pin_mode(&self, mode: Option<Mode>) {
        let now = Instant::now();
        let change = {
            let mut modes = self.modes.lock();
            match mode {
                Some(m) => modes.pin(m, now),
                None => {
                    modes.unpin(now);
                    None
                }
            }
        };
        if let Some(change) = change {
            self.apply(&change);
        }
    }

    fn observe_mode(&self) {
        let health = self.health.lock().clone();
        let signals = ModeSignals::sample(&self.admission, self.upstream.as_ref().map(|_| &health));
        let change = self.modes.lock().observe(&signals, Instant::now());
        if let Some(change) = change {
            self.apply(&change);
        }
    }

    fn apply(&self, change: &ModeChange) {
        self.enter(change.to);
        self.telemetry.mode_change(change);
        tracing::info!(%change, "mode switch");
    }

    /// Sets the switches of `mode` (without counting a switch).
    fn enter(&self, mode: Mode) {
        let switches = self.config.settings.modes.switches(mode);
        self.policy.lock().set_budget(switches.escalation_budget, Instant::now());
        self.admission.set_disabled(&switches.disabled_routes);
        if let (Some(batching), Some(delay)) = (&self.batching, switches.batching_delay) {
            batching.set_max_delay(delay);
        }
        self.telemetry.set_mode(mode);
    }
}

/// The node requests go to. A reload swaps in a whole new node; requests already running
/// finish on the node they started on, which is dropped after the last of them.
#[derive(Debug, Clone)]
pub struct CurrentNode(Arc<parking_lot::RwLock<Arc<Node>>>);

impl CurrentNode {
    /// Starts with `node`.
    pub fn new(node: Arc<Node>) -> CurrentNode {
        CurrentNode(Arc::new(parking_lot::RwLock::new(node)))
    }

    /// The node new requests go to.
    pub fn get(&self) -> Arc<Node> {
        self.0.read().clone()
    }

    /// Sends new requests to `node`; returns the previous one.
    pub fn replace(&self, node: Arc<Node>) -> Arc<Node> {
        std::mem::replace(&mut *self.0.write(), node)
    }

    /// Starts accepting escalations on the current config's QUIC listener, if it has one.
    /// Each escalation goes to the node current when it arrives.
    pub fn listen_quic(&self) -> Result<Option<TierServer>, NodeError> {
        let node = self.get();
        let (Some(addr), Some(tls)) = (node.config.settings.quic, &node.config.settings.quic_tls) else {
            return Ok(None);
        };
        let identity = TlsIdentity::from_files(&tls.cert, &tls.key, &tls.ca)?;
        let current = self.clone();
        let handler = move |request: EscalationRequest, context: RequestContext| {
            current.get().answer_escalation(request, context)
        };
        Ok(Some(TierServer::bind(&identity, ServerConfig::new(addr), handler)?))
    }
}

async fn mode_loop(node: std::sync::Weak<Node>) {
    let mut tick = tokio::time::interval(MODE_TICK);
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        node.observe_mode();
    }
}

/// Checks a request's inputs against the tensors its route declares (none declared: any).
fn check_declared_inputs(declared: &[TensorDecl], inputs: &[(String, Tensor)]) -> Result<(), String> {
    if declared.is_empty() {
        return Ok(());
    }
    let names = || declared.iter().map(|d| d.name.as_str()).collect::<Vec<_>>().join(", ");
    if inputs.len() != declared.len() {
        return Err(format!(
            "inputs: expected {} tensors ({}), got {}",
            declared.len(),
            names(),
            inputs.len()
        ));
    }
    for (i, (name, t)) in inputs.iter().enumerate() {
        let Some(d) = declared.iter().find(|d| d.name == *name) else {
            return Err(format!("inputs[{i}].name: unknown input `{name}`; this route takes {}", names()));
        };
        // As many tensors as declared, each declared: a repeated name leaves another out.
        if inputs[..i].iter().any(|(earlier, _)| earlier == name) {
            return Err(format!("inputs[{i}].name: `{name}` given twice; this route takes {}", names()));
        }
        if t.dtype() != d.dtype {
            return Err(format!(
                "inputs[{i}].datatype: `{name}` must be {}, got {}",
                d.dtype.kserve_name(),
                t.dtype().kserve_name()
            ));
        }
        if !d.accepts_shape(t.shape()) {
            return Err(format!(
                "inputs[{i}].shape: `{name}` must be shaped {:?} (-1: any), got {:?}",
                d.kserve_shape(),
                t.shape()
            ));
        }
    }
    Ok(())
}

/// The bytes the cache key covers: every input's name, type, shape and data, and every
/// parameter (plugins may read them), length-prefixed so that no two requests collide.
fn input_bytes(inputs: &[(String, Tensor)], parameters: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut parameters: Vec<&(String, String)> = parameters.iter().collect();
    parameters.sort();
    for (k, v) in parameters {
        for s in [k, v] {
            out.extend_from_slice(&(s.len() as u64).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
    for (name, t) in inputs {
        out.extend_from_slice(&(name.len() as u64).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(t.dtype().name().as_bytes());
        out.push(0);
        out.extend_from_slice(&(t.shape().len() as u64).to_le_bytes());
        for d in t.shape() {
            out.extend_from_slice(&(*d as u64).to_le_bytes());
        }
        out.extend_from_slice(&(t.data().len() as u64).to_le_bytes());
        out.extend_from_slice(t.data());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(data: Vec<u8>) -> Tensor {
        Tensor::from_u8(vec![data.len()], data).unwrap()
    }

    #[test]
    fn cache_key_bytes_cover_inputs_and_parameters() {
        let a = vec![("x".to_owned(), tensor(vec![1, 2]))];
        let base = input_bytes(&a, &[]);
        assert_eq!(base, input_bytes(&a, &[]));
        assert_ne!(base, input_bytes(&[("y".to_owned(), tensor(vec![1, 2]))], &[]));
        assert_ne!(base, input_bytes(&[("x".to_owned(), tensor(vec![1, 3]))], &[]));
        let mode = |m: &str| vec![("mode".to_owned(), m.to_owned())];
        assert_ne!(input_bytes(&a, &mode("loop")), input_bytes(&a, &mode("ok")));
        // Order of parameters does not matter; their boundaries do.
        let p1 = vec![("a".to_owned(), "1".to_owned()), ("b".to_owned(), "2".to_owned())];
        let p2 = vec![("b".to_owned(), "2".to_owned()), ("a".to_owned(), "1".to_owned())];
        assert_eq!(input_bytes(&a, &p1), input_bytes(&a, &p2));
        assert_ne!(
            input_bytes(&a, &[("ab".into(), "c".into())]),
            input_bytes(&a, &[("a".into(), "bc".into())])
        );
    }

    #[test]
    fn errors_map_to_statuses_and_frames() {
        let rejected = |rejection| ServeError::Rejected { route: "r".into(), rejection };
        let limited = rejected(Rejection::RateLimited { retry_after: Duration::from_millis(1500) });
        assert_eq!((limited.status(), limited.retry_after_secs()), (429, Some(2)));
        assert_eq!(rejected(Rejection::QueueFull).status(), 503);
        let deadline = ServeError::DeadlineExceeded { route: "r".into(), deadline: Duration::from_millis(5) };
        assert_eq!(deadline.status(), 504);
        let frame = rejected(Rejection::QueueFull).to_frame(7);
        assert_eq!((frame.id, frame.kind, frame.retryable), (7, protocol::ErrorKind::Overloaded, true));
        let frame = ServeError::BadRequest("x".into()).to_frame(1);
        assert_eq!((frame.kind, frame.retryable), (protocol::ErrorKind::BadRequest, false));
    }

    #[test]
    fn declared_inputs_are_checked_by_name_type_and_shape() {
        let declared = vec![TensorDecl {
            name: "image".into(),
            dtype: cascade_runtime::DType::U8,
            shape: vec![None, Some(28)],
        }];
        let image = |shape: Vec<usize>| {
            let n = shape.iter().product();
            vec![("image".to_owned(), Tensor::from_u8(shape, vec![0; n]).unwrap())]
        };
        assert_eq!(check_declared_inputs(&declared, &image(vec![28, 28])), Ok(()));
        assert_eq!(check_declared_inputs(&declared, &image(vec![3, 28])), Ok(()));
        assert!(
            check_declared_inputs(&declared, &image(vec![28])).unwrap_err().starts_with("inputs[0].shape")
        );
        assert!(check_declared_inputs(&declared, &[]).unwrap_err().contains("expected 1 tensors (image)"));
        let f32 = vec![("image".to_owned(), Tensor::from_f32(vec![1, 28], &[0.0; 28]).unwrap())];
        assert!(check_declared_inputs(&declared, &f32).unwrap_err().contains("must be UINT8, got FP32"));
        let other = vec![("pixels".to_owned(), tensor(vec![0; 28]))];
        assert!(check_declared_inputs(&declared, &other).unwrap_err().contains("unknown input `pixels`"));
        assert_eq!(check_declared_inputs(&[], &other), Ok(()));
        let two = |a: &str, b: &str| {
            [a, b].map(|n| (n.to_owned(), Tensor::from_u8(vec![1, 28], vec![0; 28]).unwrap())).to_vec()
        };
        let mut pair = declared.clone();
        pair.push(TensorDecl { name: "mask".into(), ..declared[0].clone() });
        assert_eq!(check_declared_inputs(&pair, &two("image", "mask")), Ok(()));
        let twice = check_declared_inputs(&pair, &two("image", "image")).unwrap_err();
        assert!(twice.starts_with("inputs[1].name: `image` given twice"), "{twice}");
    }

    #[test]
    fn degraded_answers_are_not_cached() {
        let reply = Reply {
            outputs: Vec::new(),
            confidence: 0.5,
            label: None,
            tier: "edge".into(),
            escalated: false,
            degraded: None,
            cache: CacheStatus::Miss,
        };
        assert!(cacheable(&reply));
        let degraded = Reply {
            degraded: Some(Degraded { reason: DegradedReason::UpstreamFailed, detail: None }),
            ..reply
        };
        assert!(!cacheable(&degraded));
    }
}
