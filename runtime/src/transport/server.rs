//! The upstream side: accept authenticated connections, decode requests, call the handler.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::debug;

use super::{TlsIdentity, TransportError, read_frame, time_left, transport_config};
use crate::protocol::{
    ErrorFrame, ErrorKind, EscalationAnswer, EscalationRequest, Frame, ProtocolLimits, encode,
};

/// What a handler learns about a request besides its frame.
#[derive(Debug, Clone, Copy)]
pub struct RequestContext {
    /// The requesting node's address (its identity was checked by mutual TLS).
    pub remote: SocketAddr,
    /// When the request's frame was fully received.
    pub received: Instant,
    /// The request's deadline as a local instant. The server also enforces it: a handler
    /// still running then is dropped and the requester gets a `deadline exceeded` error.
    pub deadline: Instant,
}

/// Answers escalations; the central tier plugs its batching and models in here.
///
/// Any `Fn(EscalationRequest, RequestContext) -> impl Future<Output = Result<EscalationAnswer,
/// ErrorFrame>>` closure is a handler.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request, or says why it cannot.
    fn handle(
        &self,
        request: EscalationRequest,
        context: RequestContext,
    ) -> impl Future<Output = Result<EscalationAnswer, ErrorFrame>> + Send;
}

impl<F, Fut> Handler for F
where
    F: Fn(EscalationRequest, RequestContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<EscalationAnswer, ErrorFrame>> + Send,
{
    fn handle(
        &self,
        request: EscalationRequest,
        context: RequestContext,
    ) -> impl Future<Output = Result<EscalationAnswer, ErrorFrame>> + Send {
        self(request, context)
    }
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on (UDP).
    pub listen: SocketAddr,
    /// Frame size limits.
    pub limits: ProtocolLimits,
    /// Escalations one connection may have in flight (default 1024); QUIC flow control makes
    /// a client wait beyond that.
    pub max_streams_per_connection: u32,
    /// Keep-alive interval (default 1 s).
    pub keep_alive: Duration,
    /// A connection silent this long is dropped (default 5 s).
    pub idle_timeout: Duration,
    /// Longest a stream may take to deliver its request frame (default 10 s). The deadline
    /// inside the frame cannot bound this, as it is not known until the frame is read; keep-
    /// alives would otherwise let a stalled peer hold a stream open forever.
    pub read_timeout: Duration,
}

impl ServerConfig {
    /// Defaults, listening on `listen`.
    pub fn new(listen: SocketAddr) -> ServerConfig {
        ServerConfig {
            listen,
            limits: ProtocolLimits::default(),
            max_streams_per_connection: 1024,
            keep_alive: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(10),
        }
    }
}

/// A listening upstream. Dropping it (or [`TierServer::shutdown`]) closes every connection.
#[derive(Debug)]
pub struct TierServer {
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
}

impl TierServer {
    /// Listens and serves escalations with `handler`. Must be called inside a tokio runtime.
    pub fn bind<H: Handler>(
        identity: &TlsIdentity,
        config: ServerConfig,
        handler: H,
    ) -> Result<TierServer, TransportError> {
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(identity.quic_server()?));
        let mut transport = transport_config(config.keep_alive, config.idle_timeout);
        transport.max_concurrent_bidi_streams(config.max_streams_per_connection.into());
        transport.max_concurrent_uni_streams(0u32.into());
        server.transport_config(Arc::new(transport));
        let bind_err = |source| TransportError::Bind { addr: config.listen, source };
        let endpoint = quinn::Endpoint::server(server, config.listen).map_err(bind_err)?;
        let local_addr = endpoint.local_addr().map_err(bind_err)?;
        let accept = tokio::spawn(accept_loop(endpoint.clone(), Arc::new(handler), config.clone()));
        Ok(TierServer { endpoint, local_addr, accept })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Closes every connection and waits until the peers were told.
    pub async fn shutdown(self) {
        self.accept.abort();
        self.endpoint.close(0u32.into(), b"server shutting down");
        self.endpoint.wait_idle().await;
    }
}

impl Drop for TierServer {
    fn drop(&mut self) {
        self.accept.abort();
        self.endpoint.close(0u32.into(), b"server shutting down");
    }
}

async fn accept_loop<H: Handler>(endpoint: quinn::Endpoint, handler: Arc<H>, config: ServerConfig) {
    while let Some(incoming) = endpoint.accept().await {
        let handler = handler.clone();
        let (limits, read_timeout) = (config.limits, config.read_timeout);
        tokio::spawn(async move {
            // The handshake fails here for a client without a certificate from our CA.
            let connection = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    debug!(error = %e, "tier connection refused");
                    return;
                }
            };
            let remote = connection.remote_address();
            while let Ok((send, recv)) = connection.accept_bi().await {
                tokio::spawn(serve_stream(send, recv, remote, handler.clone(), limits, read_timeout));
            }
        });
    }
}

async fn serve_stream<H: Handler>(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    remote: SocketAddr,
    handler: Arc<H>,
    limits: ProtocolLimits,
    read_timeout: Duration,
) {
    let Ok(frame) = tokio::time::timeout(read_timeout, read_frame(&mut recv, &limits)).await else {
        debug!(%remote, "tier stream sent no complete request in time");
        let _ = send.reset(0u32.into());
        return;
    };
    let reply = match frame {
        Ok(Frame::Request(request)) => {
            let received = Instant::now();
            let left = time_left(request.deadline_unix_us);
            let id = request.id;
            let context = RequestContext { remote, received, deadline: received + left };
            match tokio::time::timeout(left, handler.handle(request, context)).await {
                Ok(reply) => reply,
                Err(_) => Err(ErrorFrame {
                    id,
                    kind: ErrorKind::DeadlineExceeded,
                    retryable: false,
                    message: "deadline passed before the upstream answered".into(),
                }),
            }
        }
        Ok(_) => Err(ErrorFrame {
            id: 0,
            kind: ErrorKind::BadRequest,
            retryable: false,
            message: "expected a request frame".into(),
        }),
        Err(super::ReadFailure::Protocol(e)) => Err(e.to_error_frame(0)),
        Err(super::ReadFailure::Stream(e)) => {
            debug!(error = %e, %remote, "tier stream failed before a request arrived");
            return;
        }
    };
    let frame = match reply {
        Ok(answer) => Frame::Answer(answer),
        Err(error) => Frame::Error(error),
    };
    let bytes = encode(&frame, &limits).or_else(|e| {
        let id = match &frame {
            Frame::Answer(a) => a.id,
            Frame::Error(e) => e.id,
            Frame::Request(r) => r.id,
        };
        encode(
            &Frame::Error(ErrorFrame {
                id,
                kind: ErrorKind::Internal,
                retryable: false,
                message: e.to_string(),
            }),
            &limits,
        )
    });
    match bytes {
        Ok(bytes) => {
            if let Err(e) = send.write_all(&bytes).await {
                debug!(error = %e, %remote, "tier reply not delivered");
            }
            let _ = send.finish();
        }
        Err(e) => debug!(error = %e, "tier reply cannot be encoded"),
    }
}
