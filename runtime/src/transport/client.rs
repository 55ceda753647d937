//! The requesting side: one long-lived connection to one upstream address.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{ReadFailure, TlsIdentity, TransportError, read_frame, time_left, transport_config};
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

/// The upstream's reply to one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// It answered.
    Answer(EscalationAnswer),
    /// It refused or failed, and said so.
    Error(ErrorFrame),
}

#[derive(Debug, Default)]
struct ConnState {
    connection: Option<quinn::Connection>,
    failures: u32,
    next_attempt: Option<Instant>,
}

/// Sends escalations to one upstream address over one long-lived connection.
#[derive(Debug)]
pub struct TierClient {
    endpoint: quinn::Endpoint,
    quic: quinn::ClientConfig,
    config: ClientConfig,
    // A tokio mutex: it is held across the connection handshake so that concurrent requests
    // share one attempt instead of each opening a connection.
    state: tokio::sync::Mutex<ConnState>,
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
            quinn::Endpoint::client(local).map_err(|source| TransportError::Bind { addr: local, source })?;
        Ok(TierClient { endpoint, quic, config, state: tokio::sync::Mutex::new(ConnState::default()) })
    }

    /// The upstream's address.
    pub fn addr(&self) -> SocketAddr {
        self.config.addr
    }

    /// Sends `request` on a new stream and waits for the reply, at most until the request's
    /// deadline.
    pub async fn request(&self, request: &EscalationRequest) -> Result<Reply, TransportError> {
        let addr = self.config.addr;
        let started = Instant::now();
        let budget = time_left(request.deadline_unix_us);
        if budget.is_zero() {
            return Err(TransportError::DeadlineExceeded { addr });
        }
        let bytes = encode_request(request, &self.config.limits).map_err(TransportError::Encode)?;
        let connection = self.connection(started + budget).await?;
        let left = budget.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, self.exchange(&connection, &bytes, request.id)).await {
            Ok(reply) => reply,
            // Dropping the exchange resets its stream, so the upstream stops sending.
            Err(_) => Err(TransportError::DeadlineExceeded { addr }),
        }
    }

    /// Closes the connection, telling the upstream.
    pub async fn close(&self) {
        if let Some(c) = self.state.lock().await.connection.take() {
            c.close(0u32.into(), b"client closing");
        }
        self.endpoint.wait_idle().await;
    }

    async fn exchange(
        &self,
        connection: &quinn::Connection,
        bytes: &[u8],
        id: u64,
    ) -> Result<Reply, TransportError> {
        let addr = self.config.addr;
        let lost = |reason: String| TransportError::ConnectionLost { addr, reason };
        let (mut send, mut recv) = connection.open_bi().await.map_err(|e| lost(e.to_string()))?;
        send.write_all(bytes).await.map_err(|e| lost(e.to_string()))?;
        send.finish().map_err(|e| lost(e.to_string()))?;
        let frame = read_frame(&mut recv, &self.config.limits).await.map_err(|e| match e {
            ReadFailure::Protocol(source) => TransportError::Protocol { addr, source },
            ReadFailure::Stream(reason) => lost(reason),
        })?;
        match frame {
            Frame::Answer(answer) if answer.id == id => Ok(Reply::Answer(answer)),
            Frame::Error(error) => Ok(Reply::Error(error)),
            Frame::Answer(answer) => Err(TransportError::UnexpectedFrame {
                addr,
                what: format!("answer for request {}", answer.id),
            }),
            Frame::Request(_) => Err(TransportError::UnexpectedFrame { addr, what: "a request".into() }),
        }
    }

    /// The live connection, or a new one unless a recent failure's backoff is still running.
    /// A connection attempt is bounded by the connect timeout and by the request's
    /// `deadline`. An attempt that fails on its own (refused, or no handshake within the
    /// connect timeout) starts a backoff, so that requests arriving while the upstream is
    /// down fail fast instead of each waiting out its deadline.
    async fn connection(&self, deadline: Instant) -> Result<quinn::Connection, TransportError> {
        let addr = self.config.addr;
        let wait = deadline.saturating_duration_since(Instant::now());
        let Ok(mut state) = tokio::time::timeout(wait, self.state.lock()).await else {
            return Err(TransportError::DeadlineExceeded { addr });
        };
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
        let server_name = &self.config.server_name;
        let connect_err =
            |reason: String| TransportError::Connect { addr, server_name: server_name.clone(), reason };
        let attempt = async {
            let connecting = self
                .endpoint
                .connect_with(self.quic.clone(), addr, server_name)
                .map_err(|e| connect_err(e.to_string()))?;
            connecting.await.map_err(|e| connect_err(e.to_string()))
        };
        let limit = self.config.connect_timeout.min(deadline.saturating_duration_since(now));
        let result = match tokio::time::timeout(limit, attempt).await {
            Ok(result) => result,
            // Cut short by this request's deadline: that says nothing about the upstream.
            Err(_) if limit < self.config.connect_timeout => {
                return Err(TransportError::DeadlineExceeded { addr });
            }
            Err(_) => Err(connect_err(format!("no handshake within {limit:?}"))),
        };
        match result {
            Ok(c) => {
                *state = ConnState { connection: Some(c.clone()), failures: 0, next_attempt: None };
                Ok(c)
            }
            Err(e) => {
                state.failures = state.failures.saturating_add(1);
                let backoff = self
                    .config
                    .backoff_initial
                    .saturating_mul(1 << (state.failures - 1).min(16))
                    .min(self.config.backoff_max);
                state.next_attempt = Some(Instant::now() + backoff);
                Err(e)
            }
        }
    }
}
