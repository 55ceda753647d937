//! The requesting side: one long-lived connection to one upstream address.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{ReadFailure, TlsIdentity, TransportError, read_frame, transport_config};
use crate::protocol::{
    ErrorFrame, EscalationAnswer, EscalationRequest, Frame, ProtocolLimits, encode_request,
};

/// Client settings for one upstream address.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The upstream's address.
    pub addr: SocketAddr,
    /// The name the upstream's certificate must carry (a DNS name in its SAN).
    pub server_name: String,
    /// Frame size limits.
    pub limits: ProtocolLimits,
    /// Longest a connection attempt may take, independent of request deadlines (default 2 s).
    pub connect_timeout: Duration,
    /// Wait after the first failed connection attempt; doubles per failure (default 50 ms).
    pub backoff_initial: Duration,
    /// Longest wait between connection attempts (default 5 s).
    pub backoff_max: Duration,
    /// Keep-alive interval (default 1 s), so a dead upstream is noticed while idle.
    pub keep_alive: Duration,
    /// A connection silent this long is considered lost (default 5 s).
    pub idle_timeout: Duration,
}

impl ClientConfig {
    /// Defaults for the upstream at `addr` whose certificate names `server_name`.
    pub fn new(addr: SocketAddr, server_name: impl Into<String>) -> ClientConfig {
        ClientConfig {
            addr,
            server_name: server_name.into(),
            limits: ProtocolLimits::default(),
            connect_timeout: Duration::from_secs(2),
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            keep_alive: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
        }
    }
}

/// The upstream's answer, or the error frame in which it refused or failed and said why.
pub type Response = Result<EscalationAnswer, ErrorFrame>;

/// The outcome of one connection attempt, shared by every request that waits for it.
type ConnectAttempt = Option<Result<quinn::Connection, String>>;

#[derive(Debug, Default)]
struct ConnState {
    connection: Option<quinn::Connection>,
    /// The attempt under way, if any.
    pending: Option<tokio::sync::watch::Receiver<ConnectAttempt>>,
    failures: u32,
    next_attempt: Option<Instant>,
}

/// Sends escalations to one upstream address over one long-lived connection.
#[derive(Debug)]
pub struct TierClient {
    endpoint: quinn::Endpoint,
    quic: quinn::ClientConfig,
    config: ClientConfig,
    // Shared with the task running a connection attempt; held only for instant updates.
    state: Arc<Mutex<ConnState>>,
}

impl TierClient {
    /// A client for `config.addr` presenting `identity`. Must be called inside a tokio
    /// runtime. It connects lazily, on the first request.
    pub fn new(identity: &TlsIdentity, config: ClientConfig) -> Result<TierClient, TransportError> {
        let mut quic = quinn::ClientConfig::new(Arc::new(identity.quic_client()?));
        quic.transport_config(Arc::new(transport_config(config.keep_alive, config.idle_timeout)));
        let local: SocketAddr = if config.addr.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let endpoint =
            quinn::Endpoint::client(local).map_err(|cause| TransportError::Bind { addr: local, cause })?;
        Ok(TierClient { endpoint, quic, config, state: Arc::new(Mutex::new(ConnState::default())) })
    }

    /// The upstream's address.
    pub fn addr(&self) -> SocketAddr {
        self.config.addr
    }

    /// Sends `request` on a new stream and waits for the upstream's [`Response`], at most
    /// until `deadline`. The frame carries the time left when it is sent as its budget (the
    /// request's own `budget_us` is not used).
    pub async fn request(
        &self,
        request: &EscalationRequest,
        deadline: Instant,
    ) -> Result<Response, TransportError> {
        let addr = self.config.addr;
        if deadline <= Instant::now() {
            return Err(TransportError::DeadlineExceeded { addr });
        }
        let connection = self.connection(deadline).await?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(TransportError::DeadlineExceeded { addr });
        }
        let bytes = encode_request(request, left, &self.config.limits).map_err(TransportError::Encode)?;
        match tokio::time::timeout(left, self.exchange(&connection, &bytes, request.id)).await {
            Ok(reply) => reply,
            // Dropping the exchange resets its stream, so the upstream stops sending.
            Err(_) => Err(TransportError::DeadlineExceeded { addr }),
        }
    }

    /// Closes the connection, telling the upstream.
    pub async fn close(&self) {
        let connection = self.state.lock().connection.take();
        if let Some(c) = connection {
            c.close(0u32.into(), b"client closing");
        }
        self.endpoint.wait_idle().await;
    }

    async fn exchange(
        &self,
        connection: &quinn::Connection,
        bytes: &[u8],
        id: u64,
    ) -> Result<Response, TransportError> {
        let addr = self.config.addr;
        // Stream errors only say "connection lost"; the connection knows why (the upstream
        // may have said, as when it refuses this node's name).
        let lost = |reason: String| TransportError::ConnectionLost {
            addr,
            reason: connection.close_reason().map_or(reason, |why| why.to_string()),
        };
        let (mut send, mut recv) = connection.open_bi().await.map_err(|e| lost(e.to_string()))?;
        send.write_all(bytes).await.map_err(|e| lost(e.to_string()))?;
        send.finish().map_err(|e| lost(e.to_string()))?;
        let frame = read_frame(&mut recv, &self.config.limits).await.map_err(|e| match e {
            ReadFailure::Protocol(source) => TransportError::Protocol { addr, source },
            ReadFailure::Stream(reason) => lost(reason),
        })?;
        match frame {
            Frame::Answer(answer) if answer.id == id => Ok(Ok(answer)),
            Frame::Error(error) => Ok(Err(error)),
            Frame::Answer(answer) => Err(TransportError::UnexpectedFrame {
                addr,
                what: format!("answer for request {}", answer.id),
            }),
            Frame::Request(_) => Err(TransportError::UnexpectedFrame { addr, what: "a request".into() }),
        }
    }

    /// The live connection, or a new one unless a recent failure's backoff is still running.
    ///
    /// The handshake runs in its own task, bounded by the connect timeout only: requests wait
    /// for it until their own deadline, concurrent requests share it, and its outcome (a
    /// connection, or a failure that starts a backoff) does not depend on which request
    /// happened to start it. While an upstream is down, requests then fail fast with
    /// [`TransportError::Backoff`] instead of each waiting out its deadline.
    async fn connection(&self, deadline: Instant) -> Result<quinn::Connection, TransportError> {
        let addr = self.config.addr;
        let mut attempt = {
            let mut state = self.state.lock();
            if let Some(c) = &state.connection {
                if c.close_reason().is_none() {
                    return Ok(c.clone());
                }
                state.connection = None;
            }
            let now = Instant::now();
            if let Some(at) = state.next_attempt.filter(|&at| at > now) {
                return Err(TransportError::Backoff { addr, retry_in: at - now });
            }
            match &state.pending {
                Some(pending) => pending.clone(),
                None => {
                    let pending = self.start_attempt();
                    state.pending = Some(pending.clone());
                    pending
                }
            }
        };
        let wait = deadline.saturating_duration_since(Instant::now());
        let outcome = match tokio::time::timeout(wait, attempt.wait_for(Option::is_some)).await {
            Ok(Ok(outcome)) => {
                (*outcome).clone().unwrap_or_else(|| Err("connection attempt gave no outcome".into()))
            }
            Ok(Err(_)) => Err("connection attempt abandoned".into()),
            Err(_) => return Err(TransportError::DeadlineExceeded { addr }),
        };
        outcome.map_err(|reason| TransportError::Connect {
            addr,
            server_name: self.config.server_name.clone(),
            reason,
        })
    }

    /// Spawns one connection attempt; its outcome is published on the returned channel and
    /// recorded in the shared state.
    fn start_attempt(&self) -> tokio::sync::watch::Receiver<ConnectAttempt> {
        let (tx, rx) = tokio::sync::watch::channel(None);
        let endpoint = self.endpoint.clone();
        let quic = self.quic.clone();
        let config = self.config.clone();
        let state = self.state.clone();
        tokio::spawn(async move {
            let attempt = async {
                let connecting = endpoint
                    .connect_with(quic, config.addr, &config.server_name)
                    .map_err(|e| e.to_string())?;
                connecting.await.map_err(|e| e.to_string())
            };
            let result = match tokio::time::timeout(config.connect_timeout, attempt).await {
                Ok(result) => result,
                Err(_) => Err(format!("no handshake within {:?}", config.connect_timeout)),
            };
            {
                let mut state = state.lock();
                state.pending = None;
                match &result {
                    Ok(c) => {
                        state.connection = Some(c.clone());
                        state.failures = 0;
                        state.next_attempt = None;
                    }
                    Err(_) => {
                        state.failures = state.failures.saturating_add(1);
                        let backoff = config
                            .backoff_initial
                            .saturating_mul(1 << (state.failures - 1).min(16))
                            .min(config.backoff_max);
                        state.next_attempt = Some(Instant::now() + backoff);
                    }
                }
            }
            let _ = tx.send(Some(result));
        });
        rx
    }
}
