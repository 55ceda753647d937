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
use std::time::Instant;

use parking_lot::Mutex;

pub use balancer::{Balancer, MemberHealth};
pub use breaker::{Attempt, AttemptResult, BreakerConfig, BreakerState, CircuitBreaker};
pub use budget::{RetryBudget, RetryConfig};
pub use health::UpstreamHealth;
pub use kserve::{KserveClient, KserveConfig, KserveError};

use crate::protocol::{ErrorKind, EscalationAnswer, EscalationRequest};
use crate::transport::{ClientConfig, TierClient, TlsIdentity, TransportError, time_left};

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
    ) -> Result<EscalationAnswer, (AttemptResult, EscalationError)> {
        match self {
            Member::Quic(client) => {
                let addr = client.addr();
                match client.request(request).await {
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
            Member::Kserve(client) => client.infer(request).await.map_err(|source| {
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

struct State {
    balancer: Balancer,
    budget: RetryBudget,
    health: UpstreamHealth,
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

    /// A client for every configured KServe v2 server. Connects lazily.
    pub fn kserve(config: KserveUpstreamConfig) -> Result<UpstreamClient, KserveError> {
        let members = config
            .servers
            .iter()
            .map(|c| KserveClient::new(c).map(Member::Kserve))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(UpstreamClient::with_members(members, config.breaker, config.retry))
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
    /// Every result, retries included, feeds [`UpstreamClient::health`].
    pub async fn escalate(&self, request: &EscalationRequest) -> Result<EscalationAnswer, EscalationError> {
        let started = Instant::now();
        // The attempts watch the deadline themselves; this bounds whatever they wait on too.
        let result = tokio::time::timeout(time_left(request.deadline_unix_us), self.attempts(request))
            .await
            .unwrap_or(Err(EscalationError::DeadlineExceeded));
        let mut state = self.state.lock();
        match &result {
            Ok(_) => state.health.record_success(started.elapsed()),
            Err(_) => state.health.record_failure(),
        }
        result
    }

    async fn attempts(&self, request: &EscalationRequest) -> Result<EscalationAnswer, EscalationError> {
        let (max_attempts, mut avoid) = {
            let mut state = self.state.lock();
            state.budget.record_request(Instant::now());
            (state.budget.config().max_attempts.max(1), None)
        };
        let mut tries = 1;
        loop {
            if time_left(request.deadline_unix_us).is_zero() {
                return Err(EscalationError::DeadlineExceeded);
            }
            let Some((index, attempt)) = self.state.lock().balancer.pick(Instant::now(), avoid) else {
                return Err(EscalationError::NoUpstream);
            };
            let started = Instant::now();
            let (result, error) = match self.members[index].attempt(request, started).await {
                Ok(answer) => {
                    let latency = started.elapsed();
                    self.state.lock().balancer.finish(
                        index,
                        Instant::now(),
                        attempt,
                        AttemptResult::Success(latency),
                    );
                    return Ok(answer);
                }
                Err(failure) => failure,
            };
            let now = Instant::now();
            let mut state = self.state.lock();
            state.balancer.finish(index, now, attempt, result);
            let retry = error.retryable()
                && tries < max_attempts
                && !time_left(request.deadline_unix_us).is_zero()
                && state.budget.try_retry(now);
            drop(state);
            if !retry {
                return Err(error);
            }
            tracing::debug!(%error, tries, "retrying escalation on another upstream");
            tries += 1;
            avoid = Some(index);
        }
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
