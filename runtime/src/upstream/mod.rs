//! Escalating to several upstreams: health, selection, retries.
//!
//! The policy parts are sans-IO state machines that take `now` and return decisions, so
//! they are tested with a fake clock:
//! - [`CircuitBreaker`]: one per upstream; opens on consecutive failures or slow answers,
//!   lets probes through after a pause, closes when a probe succeeds.
//! - [`RetryBudget`]: retries only as a fraction of recent traffic.
//! - [`Balancer`]: power of two choices on latency times in-flight count, skipping
//!   upstreams whose breaker is open.
//!
//! [`UpstreamClient`] combines them with a transport: the QUIC tier protocol to other
//! Cascade nodes, or KServe v2 REST to an existing inference server ([`kserve`]).
//! [`UpstreamClient::escalate`] picks an upstream, sends, and retries elsewhere only for
//! retryable errors, within the budget and never past the request's deadline; both kinds
//! share the breakers, the budget and the health reports.

mod balancer;
mod breaker;
mod budget;
mod health;
pub mod kserve;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub use balancer::{Balancer, MemberHealth};
pub use breaker::{Attempt, AttemptResult, BreakerConfig, BreakerState, CircuitBreaker};
pub use budget::{RetryBudget, RetryConfig};
pub use health::UpstreamHealth;
pub use kserve::{KserveClient, KserveConfig, KserveError};

use crate::config::{TensorDecl, UpstreamKind, UpstreamSettings};
use crate::protocol::{ErrorKind, EscalationAnswer, EscalationRequest};
use crate::transport::{ClientConfig, TierClient, TlsIdentity, TransportError};

/// Upstreams and how to treat them.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// One transport configuration per upstream address.
    pub upstreams: Vec<ClientConfig>,
    /// Breaker settings, the same for each upstream.
    pub breaker: BreakerConfig,
    /// Retry settings.
    pub retry: RetryConfig,
}

impl UpstreamConfig {
    /// Default breaker and retry settings for these upstreams.
    pub fn new(upstreams: Vec<ClientConfig>) -> UpstreamConfig {
        UpstreamConfig { upstreams, breaker: BreakerConfig::default(), retry: RetryConfig::default() }
    }
}

/// KServe v2 servers and how to treat them.
#[derive(Debug, Clone)]
pub struct KserveUpstreamConfig {
    /// One configuration per server.
    pub servers: Vec<KserveConfig>,
    /// Breaker settings, the same for each server.
    pub breaker: BreakerConfig,
    /// Retry settings.
    pub retry: RetryConfig,
}

impl KserveUpstreamConfig {
    /// Default breaker and retry settings for these servers.
    pub fn new(servers: Vec<KserveConfig>) -> KserveUpstreamConfig {
        KserveUpstreamConfig { servers, breaker: BreakerConfig::default(), retry: RetryConfig::default() }
    }
}

/// Why an upstream client could not be set up from the config.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The QUIC client (its TLS identity, its socket) could not be set up.
    #[error("quic upstream: {0}")]
    Transport(#[from] TransportError),
    /// The KServe client could not be set up.
    #[error("kserve upstream: {0}")]
    Kserve(#[from] KserveError),
}

/// Where an escalation failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The upstream answered with an error frame.
    Upstream,
    /// The connection or stream to the upstream failed.
    Transport,
    /// This node gave up before sending (no upstream available, deadline already passed).
    Local,
}

/// Why an escalation got no answer. The requester answers locally, marked degraded.
#[derive(Debug, thiserror::Error)]
pub enum EscalationError {
    /// The upstream answered with an error frame.
    #[error("upstream {addr} answered {kind}: {message}")]
    Upstream {
        /// Which upstream.
        addr: SocketAddr,
        /// What kind of failure it reported.
        kind: ErrorKind,
        /// Whether it said a retry could help.
        retryable: bool,
        /// Its message.
        message: String,
    },
    /// The transport to the upstream failed.
    #[error("escalation to upstream {addr} failed: {source}")]
    Transport {
        /// Which upstream.
        addr: SocketAddr,
        /// The transport failure.
        source: TransportError,
    },
    /// A KServe v2 upstream failed, refused the request, or answered something unusable.
    #[error("kserve upstream {server}: {source}")]
    Kserve {
        /// Which server (`host:port`).
        server: String,
        /// What went wrong.
        source: KserveError,
    },
    /// Every upstream's circuit breaker is open.
    #[error("no upstream available: every circuit breaker is open")]
    NoUpstream,
    /// The request's deadline had passed before it could be sent.
    #[error("escalation deadline passed before sending")]
    DeadlineExceeded,
}

impl EscalationError {
    /// What went wrong, for the client of the request that was degraded by it: which kind
    /// of failure, without the upstream's addresses or messages (those go to this node's
    /// log, where an operator reads them).
    pub fn summary(&self) -> String {
        match self {
            EscalationError::Upstream { kind, .. } => format!("the upstream answered: {kind}"),
            EscalationError::Transport { source, .. } => match source {
                TransportError::Connect { .. } => "cannot connect to the upstream",
                TransportError::Backoff { .. } => "the upstream is unreachable (waiting to reconnect)",
                TransportError::ConnectionLost { .. } => "the connection to the upstream was lost",
                TransportError::DeadlineExceeded { .. } => "the upstream did not answer in time",
                TransportError::Protocol { .. } | TransportError::UnexpectedFrame { .. } => {
                    "the upstream sent an invalid answer"
                }
                TransportError::Encode(_) => "the request is too large to escalate",
                TransportError::Tls(_) | TransportError::Bind { .. } => {
                    "this node cannot reach its upstream (see its log)"
                }
            }
            .into(),
            EscalationError::Kserve { source, .. } => match source {
                KserveError::Connect(_) => "cannot connect to the upstream".into(),
                KserveError::Timeout(_) => "the upstream did not answer in time".into(),
                KserveError::Status { status, .. } => format!("the upstream answered HTTP {status}"),
                KserveError::Response(_) => "the upstream sent an invalid answer".into(),
                KserveError::Encode(_) => "the request cannot be sent to the upstream".into(),
                KserveError::Url { .. } | KserveError::Client(_) => {
                    "this node cannot reach its upstream (see its log)".into()
                }
            },
            EscalationError::NoUpstream | EscalationError::DeadlineExceeded => self.to_string(),
        }
    }

    /// Where the failure came from.
    pub fn origin(&self) -> Origin {
        match self {
            EscalationError::Upstream { .. } => Origin::Upstream,
            EscalationError::Transport { .. } => Origin::Transport,
            EscalationError::Kserve { source, .. } if source.answered() => Origin::Upstream,
            EscalationError::Kserve { source, .. } if source.server_failed().is_some() => Origin::Transport,
            EscalationError::Kserve { .. } => Origin::Local,
            EscalationError::NoUpstream | EscalationError::DeadlineExceeded => Origin::Local,
        }
    }

    /// Whether trying again later could help.
    pub fn retryable(&self) -> bool {
        match self {
            EscalationError::Upstream { retryable, .. } => *retryable,
            EscalationError::Transport { source, .. } => source.retryable(),
            EscalationError::Kserve { source, .. } => source.retryable(),
            EscalationError::NoUpstream => true,
            EscalationError::DeadlineExceeded => false,
        }
    }
}

/// One upstream, reached by its kind's transport. Not boxed: a handful live as long as the
/// node, and the size difference costs nothing there.
#[allow(clippy::large_enum_variant)]
enum Member {
    Quic(TierClient),
    Kserve(KserveClient),
}

impl Member {
    fn server(&self) -> String {
        match self {
            Member::Quic(c) => c.addr().to_string(),
            Member::Kserve(c) => c.server().to_owned(),
        }
    }

    /// One attempt: the answer, or the failure and what it says about the upstream's health
    /// (`started` dates the attempt, for an upstream that refused quickly but is healthy).
    async fn attempt(
        &self,
        request: &EscalationRequest,
        started: Instant,
        deadline: Instant,
    ) -> Result<EscalationAnswer, (AttemptResult, EscalationError)> {
        match self {
            Member::Quic(client) => {
                let addr = client.addr();
                match client.request(request, deadline).await {
                    Ok(Ok(answer)) => Ok(answer),
                    Ok(Err(e)) => {
                        // Refusals about the request itself say the upstream is healthy.
                        let outcome = match e.kind {
                            ErrorKind::Overloaded
                            | ErrorKind::Unavailable
                            | ErrorKind::Internal
                            | ErrorKind::DeadlineExceeded => AttemptResult::Failure,
                            _ => AttemptResult::Success(started.elapsed()),
                        };
                        let error = EscalationError::Upstream {
                            addr,
                            kind: e.kind,
                            retryable: e.retryable,
                            message: e.message,
                        };
                        Err((outcome, error))
                    }
                    Err(source) => {
                        let outcome = match source {
                            TransportError::Encode(_)
                            | TransportError::Tls(_)
                            | TransportError::Bind { .. } => AttemptResult::Ignored,
                            _ => AttemptResult::Failure,
                        };
                        Err((outcome, EscalationError::Transport { addr, source }))
                    }
                }
            }
            Member::Kserve(client) => client.infer(request, deadline).await.map_err(|source| {
                let outcome = match source.server_failed() {
                    Some(true) => AttemptResult::Failure,
                    Some(false) => AttemptResult::Success(started.elapsed()),
                    None => AttemptResult::Ignored,
                };
                (outcome, EscalationError::Kserve { server: client.server().to_owned(), source })
            }),
        }
    }
}

/// How long past an escalation's deadline its attempts may take to report that they ran out
/// of time, before the escalation is cut off regardless.
const DEADLINE_GRACE: Duration = Duration::from_millis(100);

/// Longest budget an escalation is given, whatever the caller asked: beyond it the clock
/// arithmetic could overflow.
const MAX_BUDGET: Duration = Duration::from_secs(24 * 3600);

struct State {
    balancer: Balancer,
    budget: RetryBudget,
    health: UpstreamHealth,
}

/// An attempt the balancer let through, settled with it exactly once: with its result, or,
/// if the attempt is dropped first (the request's client went away, a coalescing leader
/// was cancelled, a deadline fired), as ignored. Otherwise a cancelled half-open probe would
/// hold the breaker's only probe slot, and every cancel would leak an in-flight count.
struct InFlight<'a> {
    state: &'a Mutex<State>,
    index: usize,
    attempt: Option<Attempt>,
}

impl InFlight<'_> {
    fn settle(mut self, result: AttemptResult) {
        if let Some(attempt) = self.attempt.take() {
            self.state.lock().balancer.finish(self.index, Instant::now(), attempt, result);
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(attempt) = self.attempt.take() {
            // Cancelled before an answer: it says nothing about the upstream's health.
            self.state.lock().balancer.finish(self.index, Instant::now(), attempt, AttemptResult::Ignored);
        }
    }
}

/// Escalates requests to the healthiest of several upstreams: Cascade nodes over QUIC
/// ([`UpstreamClient::new`]) or KServe v2 servers ([`UpstreamClient::kserve`]).
pub struct UpstreamClient {
    members: Vec<Member>,
    // A plain mutex: held only for the instant decisions, never across an await.
    state: Mutex<State>,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient").field("upstreams", &self.members.len()).finish()
    }
}

impl UpstreamClient {
    /// A client for every configured QUIC upstream, presenting `identity`. Must be called
    /// inside a tokio runtime.
    pub fn new(identity: &TlsIdentity, config: UpstreamConfig) -> Result<UpstreamClient, TransportError> {
        let members = config
            .upstreams
            .into_iter()
            .map(|c| TierClient::new(identity, c).map(Member::Quic))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(UpstreamClient::with_members(members, config.breaker, config.retry))
    }

    /// The client the config's `[upstream]` describes: Cascade nodes over QUIC with this
    /// node's identity, or a KServe v2 server. Must be called inside a tokio runtime.
    pub fn from_settings(up: &UpstreamSettings) -> Result<UpstreamClient, SetupError> {
        let (breaker, retry) = (up.into(), up.into());
        Ok(match &up.kind {
            UpstreamKind::Quic(quic) => {
                let identity = TlsIdentity::from_files(&quic.cert, &quic.key, &quic.ca)?;
                let upstreams = quic
                    .addresses
                    .iter()
                    .map(|addr| {
                        let mut c = ClientConfig::new(*addr, up.server_name.clone());
                        c.connect_timeout = up.connect_timeout;
                        c
                    })
                    .collect();
                UpstreamClient::new(&identity, UpstreamConfig { upstreams, breaker, retry })?
            }
            UpstreamKind::Kserve(kserve) => {
                let server = KserveConfig {
                    url: kserve.url.clone(),
                    model: kserve.model.clone(),
                    connect_timeout: up.connect_timeout,
                };
                UpstreamClient::kserve(KserveUpstreamConfig { servers: vec![server], breaker, retry })?
            }
        })
    }

    /// A client for every configured KServe v2 server. Connects lazily.
    pub fn kserve(config: KserveUpstreamConfig) -> Result<UpstreamClient, KserveError> {
        let members = config
            .servers
            .iter()
            .map(|c| KserveClient::new(c).map(Member::Kserve))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(UpstreamClient::with_members(members, config.breaker, config.retry))
    }

    /// For each KServe server, its `host:port` and the outputs its model metadata says it
    /// answers (or why it could not say, within `timeout`); empty for Cascade nodes, whose
    /// routes declare their own outputs.
    pub async fn offered_outputs(
        &self,
        timeout: Duration,
    ) -> Vec<(String, Result<Vec<TensorDecl>, KserveError>)> {
        let mut out = Vec::new();
        for member in &self.members {
            if let Member::Kserve(client) = member {
                out.push((client.server().to_owned(), client.outputs(timeout).await));
            }
        }
        out
    }

    fn with_members(members: Vec<Member>, breaker: BreakerConfig, retry: RetryConfig) -> UpstreamClient {
        // Different nodes should not make the same random choices in lockstep.
        let seed =
            crate::transport::unix_micros(std::time::SystemTime::now()) ^ u64::from(std::process::id()) << 32;
        UpstreamClient {
            state: Mutex::new(State {
                balancer: Balancer::new(members.len(), breaker, seed),
                budget: RetryBudget::new(retry),
                health: UpstreamHealth::new(),
            }),
            members,
        }
    }

    /// Sends `request` to an upstream and returns its answer, retrying on another upstream
    /// when the failure is retryable, the retry budget allows and the deadline leaves time.
    /// The request's `budget_us`, from now, is its deadline; each attempt carries what is
    /// left of it. Every result, retries included, feeds [`UpstreamClient::health`].
    pub async fn escalate(&self, request: &EscalationRequest) -> Result<EscalationAnswer, EscalationError> {
        let started = Instant::now();
        let budget = Duration::from_micros(request.budget_us).min(MAX_BUDGET);
        let deadline = started + budget;
        // The attempts watch the deadline themselves, and report an attempt that ran out of
        // time as the upstream's failure; this only bounds whatever else they wait on, so it
        // fires a little after the deadline rather than cancel them first.
        let result = tokio::time::timeout(budget + DEADLINE_GRACE, self.attempts(request, deadline))
            .await
            .unwrap_or(Err(EscalationError::DeadlineExceeded));
        let mut state = self.state.lock();
        match &result {
            Ok(_) => state.health.record_success(started.elapsed(), Instant::now()),
            Err(_) => state.health.record_failure(Instant::now()),
        }
        result
    }

    async fn attempts(
        &self,
        request: &EscalationRequest,
        deadline: Instant,
    ) -> Result<EscalationAnswer, EscalationError> {
        let max_attempts = {
            let mut state = self.state.lock();
            state.budget.record_request(Instant::now());
            state.budget.config().max_attempts.max(1)
        };
        let mut failed: Option<(usize, EscalationError)> = None;
        for tries in 1..=max_attempts {
            if Instant::now() >= deadline {
                return Err(EscalationError::DeadlineExceeded);
            }
            // A retry goes to another upstream, never the one that just failed.
            let exclude = failed.as_ref().map(|(index, _)| *index);
            let Some((index, attempt)) = self.state.lock().balancer.pick(Instant::now(), exclude) else {
                return Err(failed.map_or(EscalationError::NoUpstream, |(_, e)| e));
            };
            let in_flight = InFlight { state: &self.state, index, attempt: Some(attempt) };
            let started = Instant::now();
            let (result, error) = match self.members[index].attempt(request, started, deadline).await {
                Ok(answer) => {
                    in_flight.settle(AttemptResult::Success(started.elapsed()));
                    return Ok(answer);
                }
                Err(failure) => failure,
            };
            in_flight.settle(result);
            let retry = error.retryable()
                && tries < max_attempts
                && Instant::now() < deadline
                && self.state.lock().budget.try_retry(Instant::now());
            if !retry {
                return Err(error);
            }
            tracing::debug!(%error, tries, "retrying escalation on another upstream");
            failed = Some((index, error));
        }
        Err(failed.map_or(EscalationError::NoUpstream, |(_, e)| e))
    }

    /// Whether any upstream would take an escalation now.
    pub fn available(&self) -> bool {
        self.breaker_state() != BreakerState::Open
    }

    /// The breakers as the edge policy's gate sees them: closed if any upstream's breaker is
    /// closed, half-open if none is but one would let a probe through, open otherwise.
    pub fn breaker_state(&self) -> BreakerState {
        let now = Instant::now();
        let state = self.state.lock();
        let members = state.balancer.health(now);
        if members.iter().any(|m| m.breaker == BreakerState::Closed) {
            BreakerState::Closed
        } else if state.balancer.any_available(now) {
            BreakerState::HalfOpen
        } else {
            BreakerState::Open
        }
    }

    /// Moving averages of escalation latency and failures, over every upstream.
    pub fn health(&self) -> UpstreamHealth {
        self.state.lock().health.clone()
    }

    /// Each upstream's name (`ip:port` or `host:port`) and health, in configuration order.
    pub fn members(&self) -> Vec<(String, MemberHealth)> {
        let health = self.state.lock().balancer.health(Instant::now());
        self.members.iter().map(Member::server).zip(health).collect()
    }
}
