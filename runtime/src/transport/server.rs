//! The upstream side: accept authenticated connections, decode requests, call the handler.
//!
//! Everything a downstream node can make this side hold is bounded, so that one
//! authenticated but misbehaving edge cannot exhaust the upstream's memory:
//!
//! - connections: [`ServerConfig::max_connections`] in all, and
//!   [`ServerConfig::max_connections_per_peer`] per certificate name;
//! - streams: [`ServerConfig::max_streams_per_connection`] open at once per connection;
//! - bytes in QUIC's buffers: each stream's receive window is about one frame, and each
//!   connection's is [`CONNECTION_WINDOW_FRAMES`] frames;
//! - bytes taken out of those buffers (partial frames, and decoded requests until they are
//!   answered): a budget per connection and one shared by all connections
//!   ([`ServerConfig::max_buffered_bytes`]). A stream waits for budget before it reads, so a
//!   flood stalls the flooding peer's streams (and, through flow control, the peer), never
//!   the allocator; a stream that cannot complete its frame in
//!   [`ServerConfig::read_timeout`] is reset and gives its budget back.
//!
//! A request runs under the budget it carries, counted from when it has fully arrived; the
//! requester stopping its stream (it gave up, or its own client went away) cancels the work.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tracing::{debug, warn};

use super::peer::{Allowlist, PeerName};
use super::{ReadFailure, TlsIdentity, TransportError, transport_config};
use crate::protocol::{
    ErrorFrame, ErrorKind, EscalationAnswer, EscalationRequest, Frame, FrameDecoder, HEADER_BYTES,
    ProtocolLimits, encode,
};

/// What a handler learns about a request besides its frame.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The requesting node's address.
    pub remote: SocketAddr,
    /// The requesting node's name, from the certificate mutual TLS verified.
    pub peer: PeerName,
    /// When the request's frame was fully received.
    pub received: Instant,
    /// When the request's budget runs out, as a local instant. The server also enforces it:
    /// a handler still running then is dropped and the requester gets a `deadline exceeded`
    /// error.
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

/// A connection's receive window, in frames: how much QUIC buffers for one connection
/// before the peer must wait for this side to read.
pub const CONNECTION_WINDOW_FRAMES: u64 = 4;

/// A connection's share of the read budget, in frames (at least one whole frame must fit).
const CONNECTION_BUDGET_FRAMES: usize = 4;

/// Largest piece read from a stream at a time, so budget is taken in small steps.
const READ_CHUNK: usize = 64 << 10;

/// Longest budget a request is taken to carry: more is a peer's mistake, and would
/// overflow the clock arithmetic.
const MAX_BUDGET: Duration = Duration::from_secs(24 * 3600);

/// How long shutdown waits for peers to acknowledge the close, after draining.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// QUIC application close codes this side sends; the reason text says more.
mod close {
    /// The server is shutting down.
    pub(super) const SHUTDOWN: u32 = 0;
    /// The peer's certificate name is not admitted.
    pub(super) const NOT_ALLOWED: u32 = 1;
    /// The peer holds as many connections as it may.
    pub(super) const TOO_MANY: u32 = 2;
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on (UDP).
    pub listen: SocketAddr,
    /// Frame size limits.
    pub limits: ProtocolLimits,
    /// Escalations one connection may have open at once (default 128); QUIC flow control
    /// makes a client wait beyond that.
    pub max_streams_per_connection: u32,
    /// Connections open at once, from all peers (default 256).
    pub max_connections: u32,
    /// Connections one peer (one certificate name) may hold at once (default 4).
    pub max_connections_per_peer: u32,
    /// Request bytes held at once, by all connections together: partial frames and decoded
    /// requests until they are answered (default 128 MiB; at least one frame).
    pub max_buffered_bytes: usize,
    /// Which certificate names may connect (default: any the CA signed).
    pub allow: Allowlist,
    /// Keep-alive interval (default 1 s).
    pub keep_alive: Duration,
    /// A connection silent this long is dropped (default 5 s).
    pub idle_timeout: Duration,
    /// Longest a stream may take to deliver its request frame (default 10 s). The budget
    /// inside the frame cannot bound this, as it is not known until the frame is read; keep-
    /// alives would otherwise let a stalled peer hold a stream open forever.
    pub read_timeout: Duration,
    /// How long shutdown lets escalations in flight finish (default 10 s).
    pub drain: Duration,
}

impl ServerConfig {
    /// Defaults, listening on `listen`.
    pub fn new(listen: SocketAddr) -> ServerConfig {
        ServerConfig {
            listen,
            limits: ProtocolLimits::default(),
            max_streams_per_connection: 128,
            max_connections: 256,
            max_connections_per_peer: 4,
            max_buffered_bytes: 128 << 20,
            allow: Allowlist::any(),
            keep_alive: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(10),
            drain: Duration::from_secs(10),
        }
    }

    /// Bytes of one whole frame, header included.
    fn frame_bytes(&self) -> usize {
        self.limits.max_frame_bytes.saturating_add(HEADER_BYTES)
    }

    fn quic(&self, identity: &TlsIdentity) -> Result<quinn::ServerConfig, TransportError> {
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(identity.quic_server()?));
        let mut transport = transport_config(self.keep_alive, self.idle_timeout);
        let frame = u64::try_from(self.frame_bytes()).unwrap_or(u64::MAX);
        let window = |bytes: u64| quinn::VarInt::from_u64(bytes).unwrap_or(quinn::VarInt::MAX);
        transport
            .max_concurrent_bidi_streams(self.max_streams_per_connection.into())
            .max_concurrent_uni_streams(0u32.into())
            .stream_receive_window(window(frame.min(READ_CHUNK as u64 * 16)))
            .receive_window(window(frame.saturating_mul(CONNECTION_WINDOW_FRAMES)));
        server.transport_config(Arc::new(transport));
        // Handshakes waiting to be accepted are bounded too.
        server.max_incoming(self.max_connections as usize);
        Ok(server)
    }
}

/// State every connection task shares.
struct Shared {
    config: ServerConfig,
    /// The allowlist and frame limits in force: a reconfiguration changes them.
    allow: RwLock<Allowlist>,
    limits: RwLock<ProtocolLimits>,
    /// The read budget all connections share.
    budget: Arc<Semaphore>,
    /// Connections held, per peer and in all.
    connections: Mutex<ConnectionCounts>,
    /// Set once shutdown begins: stop taking new streams.
    stopping: watch::Receiver<bool>,
}

#[derive(Default)]
struct ConnectionCounts {
    per_peer: HashMap<PeerName, u32>,
    total: u32,
}

/// A connection's place in [`ConnectionCounts`], given back on drop.
struct ConnectionSlot {
    shared: Arc<Shared>,
    peer: PeerName,
}

impl Shared {
    fn take_slot(self: &Arc<Self>, peer: &PeerName) -> Result<ConnectionSlot, String> {
        let mut counts = self.connections.lock();
        let mine = counts.per_peer.get(peer).copied().unwrap_or(0);
        if mine >= self.config.max_connections_per_peer {
            return Err(format!(
                "{peer} already holds {mine} connections, the most one peer may (listeners.quic_max_connections_per_peer)"
            ));
        }
        if counts.total >= self.config.max_connections {
            return Err(format!("all {} connections are taken", self.config.max_connections));
        }
        counts.total += 1;
        *counts.per_peer.entry(peer.clone()).or_insert(0) += 1;
        Ok(ConnectionSlot { shared: self.clone(), peer: peer.clone() })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut counts = self.shared.connections.lock();
        counts.total -= 1;
        if let Some(n) = counts.per_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                counts.per_peer.remove(&self.peer);
            }
        }
    }
}

/// Held by every connection and stream task; shutdown waits until all are dropped.
type Tracker = mpsc::Sender<()>;

/// A listening upstream. [`TierServer::shutdown`] drains it; dropping it closes every
/// connection at once.
pub struct TierServer {
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    /// Dropped when shutdown begins, so that `drained` ends with the last task.
    tracker: Mutex<Option<Tracker>>,
    drained: tokio::sync::Mutex<mpsc::Receiver<()>>,
}

impl std::fmt::Debug for TierServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TierServer").field("local_addr", &self.local_addr).finish()
    }
}

impl TierServer {
    /// Listens and serves escalations with `handler`. Must be called inside a tokio runtime.
    pub fn bind<H: Handler>(
        identity: &TlsIdentity,
        config: ServerConfig,
        handler: H,
    ) -> Result<TierServer, TransportError> {
        let server = config.quic(identity)?;
        let bind_err = |cause| TransportError::Bind { addr: config.listen, cause };
        let endpoint = quinn::Endpoint::server(server, config.listen).map_err(bind_err)?;
        let local_addr = endpoint.local_addr().map_err(bind_err)?;
        let (stop, stopping) = watch::channel(false);
        let (tracker, drained) = mpsc::channel(1);
        let budget = Arc::new(Semaphore::new(config.max_buffered_bytes.max(config.frame_bytes())));
        let shared = Arc::new(Shared {
            allow: RwLock::new(config.allow.clone()),
            limits: RwLock::new(config.limits),
            config,
            budget,
            connections: Mutex::default(),
            stopping,
        });
        let accept =
            tokio::spawn(accept_loop(endpoint.clone(), Arc::new(handler), shared.clone(), tracker.clone()));
        Ok(TierServer {
            endpoint,
            local_addr,
            accept,
            shared,
            stop,
            tracker: Mutex::new(Some(tracker)),
            drained: tokio::sync::Mutex::new(drained),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Presents `identity` (a renewed certificate, a rotated CA), admits `allow` and reads
    /// frames under `limits` from now on. New connections and streams use them; a connection
    /// whose peer is no longer admitted is closed when it next opens a stream.
    pub fn reconfigure(
        &self,
        identity: &TlsIdentity,
        allow: Allowlist,
        limits: ProtocolLimits,
    ) -> Result<(), TransportError> {
        let config = ServerConfig { limits, ..self.shared.config.clone() };
        self.endpoint.set_server_config(Some(config.quic(identity)?));
        *self.shared.allow.write() = allow;
        *self.shared.limits.write() = limits;
        Ok(())
    }

    /// Stops taking new connections and escalations, lets those in flight finish (at most
    /// [`ServerConfig::drain`]), then closes every connection and waits briefly until the
    /// peers were told. The server takes nothing new afterwards; its UDP port is free once the
    /// server is dropped.
    pub async fn shutdown(&self) {
        self.endpoint.set_server_config(None);
        let _ = self.stop.send(true);
        self.tracker.lock().take();
        let drain = self.shared.config.drain;
        if tokio::time::timeout(drain, self.drained.lock().await.recv()).await.is_err() {
            warn!(?drain, "escalations still running at the end of the drain; closing");
        }
        self.accept.abort();
        self.endpoint.close(close::SHUTDOWN.into(), b"server shutting down");
        let _ = tokio::time::timeout(CLOSE_WAIT, self.endpoint.wait_idle()).await;
    }
}

impl Drop for TierServer {
    fn drop(&mut self) {
        self.accept.abort();
        self.endpoint.close(close::SHUTDOWN.into(), b"server shutting down");
    }
}

async fn accept_loop<H: Handler>(
    endpoint: quinn::Endpoint,
    handler: Arc<H>,
    shared: Arc<Shared>,
    tracker: Tracker,
) {
    let mut stopping = shared.stopping.clone();
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => return,
            },
            // Shutdown: stop taking connections, and stop holding up the drain.
            _ = stopping.wait_for(|&stop| stop) => return,
        };
        tokio::spawn(serve_connection(incoming, handler.clone(), shared.clone(), tracker.clone()));
    }
}

async fn serve_connection<H: Handler>(
    incoming: quinn::Incoming,
    handler: Arc<H>,
    shared: Arc<Shared>,
    tracker: Tracker,
) {
    // The handshake fails here for a client without a certificate from our CA, or one
    // whose certificate does not allow client authentication (a central's).
    let connection = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            debug!(error = %e, "tier connection refused in the handshake");
            return;
        }
    };
    let remote = connection.remote_address();
    let refuse = |code: u32, why: String| {
        warn!(%remote, "tier connection refused: {why}");
        connection.close(code.into(), why.as_bytes());
    };
    let Some(peer) = PeerName::of(&connection) else {
        return refuse(close::NOT_ALLOWED, "the certificate carries no name".into());
    };
    if !shared.allow.read().admits(&peer) {
        return refuse(close::NOT_ALLOWED, format!("{peer} is not on this node's listeners.quic_allow"));
    }
    let _slot = match shared.take_slot(&peer) {
        Ok(slot) => slot,
        Err(why) => return refuse(close::TOO_MANY, why),
    };
    let frame_bytes = shared.limits.read().max_frame_bytes.saturating_add(HEADER_BYTES);
    let conn_budget = Arc::new(Semaphore::new(frame_bytes * CONNECTION_BUDGET_FRAMES));
    let mut stopping = shared.stopping.clone();
    loop {
        let (send, recv) = tokio::select! {
            stream = connection.accept_bi() => match stream {
                Ok(stream) => stream,
                Err(_) => return, // closed by the peer, or timed out
            },
            _ = stopping.wait_for(|&stop| stop) => return,
        };
        if !shared.allow.read().admits(&peer) {
            return refuse(
                close::NOT_ALLOWED,
                format!("{peer} is no longer on this node's listeners.quic_allow"),
            );
        }
        let stream = Stream {
            send,
            recv,
            remote,
            peer: peer.clone(),
            budgets: [conn_budget.clone(), shared.budget.clone()],
            _tracker: tracker.clone(),
        };
        tokio::spawn(stream.serve(handler.clone(), shared.clone()));
    }
}

/// One escalation's stream and what it may hold.
struct Stream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    remote: SocketAddr,
    peer: PeerName,
    /// The connection's read budget, then the one all connections share.
    budgets: [Arc<Semaphore>; 2],
    _tracker: Tracker,
}

impl Stream {
    async fn serve<H: Handler>(mut self, handler: Arc<H>, shared: Arc<Shared>) {
        let (remote, peer) = (self.remote, self.peer.clone());
        let limits = *shared.limits.read();
        let read = tokio::time::timeout(shared.config.read_timeout, self.read_request(&limits)).await;
        let Ok(read) = read else {
            debug!(%remote, %peer, "tier stream sent no complete request in time");
            let _ = self.send.reset(0u32.into());
            return;
        };
        // Held until the answer is sent: the decoded request is as large as its frame.
        let (reply, _held) = match read {
            Ok((Frame::Request(request), held)) => {
                let answer = tokio::select! {
                    reply = answer(&*handler, request, remote, peer.clone()) => reply,
                    _ = self.send.stopped() => {
                        debug!(%remote, %peer, "the requester gave up; its escalation is cancelled");
                        return;
                    }
                };
                (answer, Some(held))
            }
            Ok((_, held)) => (Err(bad_request(0, "expected a request frame")), Some(held)),
            Err(ReadFailure::Protocol(e)) => (Err(e.to_error_frame(0)), None),
            Err(ReadFailure::Stream(e)) => {
                debug!(error = %e, %remote, %peer, "tier stream failed before a request arrived");
                return;
            }
        };
        self.reply(reply, &limits).await;
    }

    /// Reads one frame, taking read budget for each chunk before taking it from QUIC. The
    /// budget held is returned with the frame, to keep until the request is answered.
    ///
    /// Streams that each hold part of a large frame can use up their connection's budget
    /// with none complete; they wait until the read timeout resets them and frees it.
    async fn read_request(
        &mut self,
        limits: &ProtocolLimits,
    ) -> Result<(Frame, Vec<OwnedSemaphorePermit>), ReadFailure> {
        let mut decoder = FrameDecoder::new(*limits);
        // One permit per budget, grown chunk by chunk.
        let mut held: Vec<OwnedSemaphorePermit> = Vec::with_capacity(self.budgets.len());
        loop {
            let mut taken = Vec::with_capacity(self.budgets.len());
            for budget in &self.budgets {
                let permit = budget
                    .clone()
                    .acquire_many_owned(READ_CHUNK as u32)
                    .await
                    .map_err(|_| ReadFailure::Stream("server shutting down".into()))?;
                taken.push(permit);
            }
            match self.recv.read_chunk(READ_CHUNK, true).await {
                Ok(Some(chunk)) => {
                    // Keep budget for the bytes received; give back the rest of the chunk's.
                    let unused = READ_CHUNK - chunk.bytes.len();
                    for (i, mut permit) in taken.into_iter().enumerate() {
                        drop(permit.split(unused));
                        match held.get_mut(i) {
                            Some(h) => h.merge(permit),
                            None => held.push(permit),
                        }
                    }
                    let mut bytes = &chunk.bytes[..];
                    if let Some(frame) = decoder.decode(&mut bytes).map_err(ReadFailure::Protocol)? {
                        return Ok((frame, held));
                    }
                }
                Ok(None) => {
                    decoder.finish().map_err(ReadFailure::Protocol)?;
                    return Err(ReadFailure::Stream("stream ended before a frame".into()));
                }
                Err(e) => return Err(ReadFailure::Stream(e.to_string())),
            }
        }
    }

    async fn reply(mut self, reply: Result<EscalationAnswer, ErrorFrame>, limits: &ProtocolLimits) {
        let frame = match reply {
            Ok(answer) => Frame::Answer(answer),
            Err(error) => Frame::Error(error),
        };
        let bytes = encode(&frame, limits).or_else(|e| {
            let id = match &frame {
                Frame::Answer(a) => a.id,
                Frame::Error(e) => e.id,
                Frame::Request(r) => r.id,
            };
            let error =
                ErrorFrame { id, kind: ErrorKind::Internal, retryable: false, message: e.to_string() };
            encode(&Frame::Error(error), limits)
        });
        match bytes {
            Ok(bytes) => {
                if let Err(e) = self.send.write_all(&bytes).await {
                    debug!(error = %e, remote = %self.remote, "tier reply not delivered");
                }
                let _ = self.send.finish();
                // Written is not delivered: wait (briefly) until the requester has it, as the
                // connection may be closing (a drain) once this stream is gone.
                let _ = tokio::time::timeout(CLOSE_WAIT, self.send.stopped()).await;
            }
            Err(e) => debug!(error = %e, "tier reply cannot be encoded"),
        }
    }
}

/// Runs the handler under the request's budget; a request that arrives with none left is
/// refused without running.
async fn answer<H: Handler>(
    handler: &H,
    request: EscalationRequest,
    remote: SocketAddr,
    peer: PeerName,
) -> Result<EscalationAnswer, ErrorFrame> {
    let received = Instant::now();
    let id = request.id;
    let budget = Duration::from_micros(request.budget_us).min(MAX_BUDGET);
    let expired = || ErrorFrame {
        id,
        kind: ErrorKind::DeadlineExceeded,
        retryable: false,
        message: "the request's budget ran out before the upstream answered".into(),
    };
    if budget.is_zero() {
        return Err(expired());
    }
    let context = RequestContext { remote, peer, received, deadline: received + budget };
    tokio::time::timeout(budget, handler.handle(request, context)).await.unwrap_or_else(|_| Err(expired()))
}

fn bad_request(id: u64, message: &str) -> ErrorFrame {
    ErrorFrame { id, kind: ErrorKind::BadRequest, retryable: false, message: message.into() }
}
