//! The accept loop behind the HTTP and admin listeners: hyper's HTTP/1 connections under
//! the limits a node that faces the network needs.
//!
//! `axum::serve` sets no timer, so a client that sends half a header, trickles a body or
//! keeps an idle connection open holds a task and a file descriptor for as long as it
//! likes; enough of them exhaust the process's descriptors, and a graceful shutdown waits on
//! them forever. This loop serves the same [`Router`]s with these [`ListenerLimits`]:
//!
//! | limit | default | past it |
//! | --- | --- | --- |
//! | `header_read` | 5 s | the request head (line and headers) has not all arrived: the connection is closed |
//! | `body_read` | 30 s | the request body has not all arrived: `408` with `{"error": ...}`, and the connection is closed |
//! | `idle` | 60 s | a kept-alive connection has started no new request: it is closed |
//! | `max_connections` | 1024 | a new connection gets `503`, `Retry-After: 1` and `{"error": ...}` as soon as its request starts to arrive, without the request being read, and is closed |
//! | `drain` | 10 s | on shutdown, connections with requests still in flight are closed |
//!
//! The header clock starts when the connection is accepted (its first request) or at the
//! first byte of a later request; the body clock when the request head has been read.
//!
//! Shutdown stops accepting, closes idle connections, lets the requests in flight finish
//! (each connection closes after its answer) for up to `drain`, then closes what is left
//! and returns.
//!
//! How the header and idle timeouts share hyper's one timer: hyper starts its header read
//! timer whenever it waits for a request head, between requests on a kept-alive connection
//! too, so on its own `header_read` would also be the idle timeout. The connection's
//! timer ([`head`]) moves that deadline: while no byte of a later request has arrived it is
//! `idle` after the wait began, from the first byte on it is `header_read` after that byte.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cascade_runtime::config::NodeSettings;
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

use super::head;

/// How long a listener's clients may take, and how many of them it holds (see the module
/// doc for what happens past each limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Time for a request's head (request line and headers) to arrive: from the connection's
    /// accept for its first request, from the first byte for a later one.
    pub header_read: Duration,
    /// Time for a request's body to arrive, from the end of its head.
    pub body_read: Duration,
    /// Time a kept-alive connection may wait for its next request.
    pub idle: Duration,
    /// Connections open at once; the ones past it are refused with 503.
    pub max_connections: usize,
    /// Time requests in flight get to finish on shutdown.
    pub drain: Duration,
}

impl From<&NodeSettings> for ListenerLimits {
    /// `[listeners] http_*` and `drain_timeout_ms`.
    fn from(settings: &NodeSettings) -> ListenerLimits {
        let http = &settings.http_limits;
        ListenerLimits {
            header_read: http.header_read,
            body_read: http.body_read,
            idle: http.idle,
            max_connections: http.max_connections as usize,
            drain: settings.drain,
        }
    }
}

/// Refused connections being answered at once; past it a refused connection is closed
/// after one non-blocking write, so a flood of refusals holds a bounded number of
/// descriptors too.
const MAX_REFUSALS: usize = 64;

/// How long a refused connection is kept to deliver its 503: see [`refuse`].
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// How long a refusal waits for the client's request to start before it answers anyway.
const REFUSAL_WAIT: Duration = Duration::from_millis(250);

/// Pause after an accept error that is not one client's: most likely the process is out of
/// file descriptors, and retrying at once would spin until some close.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// A listener being served; [`Serving::shutdown`] drains it.
pub(crate) struct Serving {
    name: &'static str,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Serving {
    /// Serves `app` on `listener` under `limits` until [`Serving::shutdown`] (or until the
    /// `Serving` is dropped). `name` is the listener's in logs.
    pub(crate) fn spawn(
        name: &'static str,
        listener: TcpListener,
        app: Router,
        limits: ListenerLimits,
    ) -> Serving {
        let (stop, stopped) = oneshot::channel();
        let caps = Caps::new(&limits);
        let task = tokio::spawn(accept_loop(name, listener, app, limits, caps, stopped));
        Serving { name, stop: Some(stop), task }
    }

    /// Stops accepting and drains: returns once every connection has closed, within the
    /// limits' `drain` (and a refused connection's short linger).
    pub(crate) async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.map_err(|e| anyhow::anyhow!("{} listener task: {e}", self.name))
    }
}

/// A listener's connection cap and refusal budget, shared by every accept loop serving it.
#[derive(Clone)]
pub(super) struct Caps {
    slots: Arc<Semaphore>,
    refusals: Arc<Semaphore>,
}

impl Caps {
    pub(super) fn new(limits: &ListenerLimits) -> Caps {
        Caps {
            slots: Arc::new(Semaphore::new(limits.max_connections.min(Semaphore::MAX_PERMITS))),
            refusals: Arc::new(Semaphore::new(MAX_REFUSALS)),
        }
    }
}

pub(super) async fn accept_loop(
    name: &'static str,
    listener: TcpListener,
    app: Router,
    limits: ListenerLimits,
    caps: Caps,
    mut stop: oneshot::Receiver<()>,
) {
    let Caps { slots, refusals } = caps;
    let refusal: Arc<[u8]> = refusal_response(limits.max_connections).into();
    let (closing, closing_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut refusing = false;
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _peer)) => match Arc::clone(&slots).try_acquire_owned() {
                Ok(slot) => {
                    refusing = false;
                    connections.spawn(connection(stream, app.clone(), limits, closing_rx.clone(), slot));
                }
                Err(_) => {
                    // Once per spell at the limit: a flood must not flood the log too.
                    if !refusing {
                        tracing::warn!(
                            listener = name,
                            max_connections = limits.max_connections,
                            "at the connection limit: refusing new connections with 503"
                        );
                        refusing = true;
                    }
                    refuse(stream, &refusals, &refusal);
                }
            },
            Err(e) if is_one_clients(&e) => {}
            Err(e) => {
                tracing::error!(listener = name, error = %e, "accept failed; pausing the listener");
                tokio::select! {
                    _ = &mut stop => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
    drop(listener);
    let _ = closing.send(true);
    if connections.is_empty() {
        return;
    }
    tracing::info!(listener = name, open = connections.len(), "draining connections");
    let drained =
        tokio::time::timeout(limits.drain, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            listener = name,
            open = connections.len(),
            drain = ?limits.drain,
            "drain time is up: closing the connections still open"
        );
        // An aborted connection's socket closes when its task is dropped, at its next
        // await: a running plugin yields at the next epoch tick, and is dropped there.
        connections.abort_all();
    }
}

/// Accept errors that concern one client (it went before it was accepted), not the listener.
fn is_one_clients(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// Serves one connection until it closes, or until shutdown closes it; `_slot` is its
/// place under `max_connections`, given back when the task ends.
async fn connection(
    stream: TcpStream,
    app: Router,
    limits: ListenerLimits,
    mut closing: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    // Answers are small and written whole: send them now rather than after the client's
    // delayed ACK.
    let _ = stream.set_nodelay(true);
    let (io, timer) = head::watch(stream, limits.header_read, limits.idle);
    let service = Requests { app: TowerToHyperService::new(app), body_read: limits.body_read };
    let mut http = http1::Builder::new();
    http.timer(timer).header_read_timeout(limits.header_read).keep_alive(true);
    let conn = http.serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "connection closed");
                }
                return;
            }
            // A dropped sender means the accept loop is gone: drain as on shutdown.
            _ = closing.wait_for(|closing| *closing), if !draining => {
                draining = true;
                // Closes the connection now if it is between requests, else after the
                // answer to the request in flight.
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// The 503 a connection past `max_connections` gets, whole.
fn refusal_response(max_connections: usize) -> Vec<u8> {
    let body = json!({
        "error": format!(
            "the node is at its connection limit ({max_connections} open connections); retry shortly"
        )
    })
    .to_string()
        + "\n";
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    [head.as_bytes(), body.as_bytes()].concat()
}

/// Answers a connection past the limit with `response` without reading its request, and
/// closes it.
///
/// The answer waits for the request to start arriving (for up to [`REFUSAL_WAIT`]): an
/// HTTP client that gets a response before it has sent its request reports a broken
/// connection (hyper: "unexpected message") instead of the 503. Closing a socket with
/// unread bytes resets the connection, which can destroy the answer before the client
/// reads it, so the refusal then half-closes, and reads and discards what the client sent
/// until the client closes or [`REFUSAL_LINGER`] passes.
fn refuse(stream: TcpStream, refusals: &Arc<Semaphore>, response: &Arc<[u8]>) {
    let Ok(lingering) = Arc::clone(refusals).try_acquire_owned() else {
        let _ = stream.try_write(response);
        return;
    };
    let response = Arc::clone(response);
    tokio::spawn(async move {
        let _lingering = lingering;
        let mut stream = stream;
        let _ = tokio::time::timeout(REFUSAL_LINGER, async move {
            // `peek`, not `readable`: a fresh socket can report itself readable at once.
            let _ = tokio::time::timeout(REFUSAL_WAIT, stream.peek(&mut [0u8; 1])).await;
            stream.write_all(&response).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 1024];
            while stream.read(&mut sink).await? > 0 {}
            Ok::<(), io::Error>(())
        })
        .await;
    });
}

/// The listener's [`Router`] as hyper calls it, with every request's body under a deadline.
struct Requests {
    app: TowerToHyperService<Router>,
    body_read: Duration,
}

impl hyper::service::Service<Request<Incoming>> for Requests {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let expired = Arc::new(AtomicBool::new(false));
        let deadline = tokio::time::Instant::now() + self.body_read;
        let body_expired = Arc::clone(&expired);
        let request =
            request.map(|inner| DeadlineBody { inner, deadline, sleep: None, expired: body_expired });
        let answer = self.app.call(request);
        let body_read = self.body_read;
        Box::pin(async move {
            let response = answer.await?;
            if !expired.load(Ordering::Relaxed) {
                return Ok(response);
            }
            // Whatever the handler made of its failed body read (axum says 400), the client
            // was too slow: say so, and close, as the rest of the body is not coming.
            let message = format!("the request body did not arrive within {body_read:?}");
            let mut response =
                (StatusCode::REQUEST_TIMEOUT, axum::Json(json!({ "error": message }))).into_response();
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            Ok(response)
        })
    }
}

/// A request body that fails with [`BodyError::TimedOut`] once `deadline` passes, and
/// records that it did in `expired`.
struct DeadlineBody {
    inner: Incoming,
    deadline: tokio::time::Instant,
    /// Made at the first wait only: most bodies arrive with their head and never need it.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    expired: Arc<AtomicBool>,
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    /// The connection failed while the body was being read.
    #[error("reading the request body: {0}")]
    Read(#[from] hyper::Error),
    /// The body did not arrive within `body_read`.
    #[error("the request body did not arrive in time")]
    TimedOut,
}

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if this.expired.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(BodyError::TimedOut)));
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(BodyError::Read)));
        }
        let deadline = this.deadline;
        let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        ready!(sleep.as_mut().poll(cx));
        this.expired.store(true, Ordering::Relaxed);
        Poll::Ready(Some(Err(BodyError::TimedOut)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_one_whole_503_with_retry_after() {
        let text = String::from_utf8(refusal_response(7)).unwrap_or_default();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(head.contains("\r\nretry-after: 1\r\n"), "{head}");
        assert!(head.contains(&format!("\r\ncontent-length: {}", body.len())), "{head}");
        assert_eq!(body.lines().count(), 1);
        let parsed: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        assert!(parsed["error"].as_str().unwrap_or_default().contains("connection limit (7 open"), "{body}");
    }
}
