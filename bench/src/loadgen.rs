//! The benchmarks' HTTP/1.1 client and open-loop load generator.
//!
//! A benchmark's client shares this machine's cores with the server it measures, so it must
//! cost as little as possible per request: requests are encoded once, before timing starts,
//! and written as bytes over persistent connections; responses are framed with `httparse`
//! and their `Content-Length`, and nothing else is parsed. A general client (reqwest) costs
//! several times more per request, which on 2 cores comes straight out of the server's share.
//!
//! - [`Conn`]: one blocking keep-alive connection, one request at a time, for latency
//!   measured without a load generator in the way.
//! - [`drive`]: an open-loop rung. A dispatcher thread releases request `k` at
//!   `t0 + k / rate` whatever the earlier ones are doing; a single-threaded tokio runtime
//!   sends each released request on an idle connection of a fixed set (the wrk2 design).
//!   Latency runs from the scheduled time to the response's last byte, so a server that falls
//!   behind shows up as latency instead of slowing the sender (coordinated omission).
//!
//! Responses must be complete `Content-Length` bodies (what hyper and uvicorn send for JSON);
//! a chunked or unframed response is an error naming why.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

/// A `POST` with a JSON body, encoded once.
pub(crate) fn post_json(addr: SocketAddr, path: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// A `POST` with the binary tensor data extension: the JSON `header`, then `raw` (the
/// header's inputs' bytes), and `Inference-Header-Content-Length` saying where one ends.
pub(crate) fn post_binary(addr: SocketAddr, path: &str, header: &[u8], raw: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/octet-stream\r\n\
         inference-header-content-length: {}\r\ncontent-length: {}\r\n\r\n",
        header.len(),
        header.len() + raw.len()
    )
    .into_bytes();
    request.extend_from_slice(header);
    request.extend_from_slice(raw);
    request
}

/// A `GET`, encoded once.
pub(crate) fn get(addr: SocketAddr, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n\r\n").into_bytes()
}

/// Where the first complete response in `buf` ends: `Ok(None)` until it is all there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Framed {
    /// The status code.
    pub(crate) status: u16,
    /// Where the body starts.
    pub(crate) body_start: usize,
    /// Where the response ends (one past the body's last byte).
    pub(crate) end: usize,
}

/// Frames the first HTTP/1.1 response in `buf`.
pub(crate) fn frame(buf: &[u8]) -> anyhow::Result<Option<Framed>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf).context("malformed HTTP response")? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let status = response.code.context("HTTP response without a status code")?;
    let mut length = None;
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(h.value).ok().map(str::trim);
            length = Some(
                text.and_then(|t| t.parse::<usize>().ok())
                    .with_context(|| format!("bad content-length {:?}", String::from_utf8_lossy(h.value)))?,
            );
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("the server sent a chunked response; this client reads only content-length bodies");
        }
    }
    let length = match (length, status) {
        (Some(n), _) => n,
        // These carry no body by definition.
        (None, 100..=199 | 204 | 304) => 0,
        (None, _) => bail!("HTTP {status} response without a content-length"),
    };
    let end = head_len + length;
    Ok((buf.len() >= end).then_some(Framed { status, body_start: head_len, end }))
}

/// One blocking keep-alive connection, one request at a time.
pub(crate) struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Connects, with Nagle off (requests are written whole).
    pub(crate) fn connect(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(Conn { stream, buf: Vec::with_capacity(16 * 1024) })
    }

    /// Sends `request` (from [`post_json`] or [`get`]) and reads the whole response: its
    /// status and body.
    pub(crate) fn round_trip(&mut self, request: &[u8]) -> anyhow::Result<(u16, &[u8])> {
        self.buf.clear();
        self.stream.write_all(request).context("sending the request")?;
        let framed = loop {
            if let Some(f) = frame(&self.buf)? {
                break f;
            }
            let len = self.buf.len();
            self.buf.resize(len + 16 * 1024, 0);
            let n = self.stream.read(&mut self.buf[len..]).context("reading the response")?;
            self.buf.truncate(len + n);
            if n == 0 {
                bail!("the server closed the connection mid-response");
            }
        };
        if framed.end != self.buf.len() {
            bail!("the server sent more than one response");
        }
        Ok((framed.status, &self.buf[framed.body_start..framed.end]))
    }
}

/// What one open-loop rung measured.
#[derive(Debug, Default)]
pub(crate) struct Measured {
    /// Latencies of the accepted responses, microseconds from their scheduled send time.
    pub(crate) latencies_us: Vec<f64>,
    /// Requests that failed: connection errors, timeouts, non-2xx, or refused by `accept`.
    pub(crate) errors: usize,
    /// The first error, for the log.
    pub(crate) first_error: Option<String>,
}

/// An open-loop rung's settings.
pub(crate) struct Load<'a> {
    /// The server.
    pub(crate) addr: SocketAddr,
    /// Encoded requests, cycled: request `k` is `requests[k % len]`.
    pub(crate) requests: &'a Arc<Vec<Vec<u8>>>,
    /// Requests per second.
    pub(crate) rate: f64,
    /// How long requests are released for.
    pub(crate) duration: Duration,
    /// Keep-alive connections (the most requests in flight at once).
    pub(crate) connections: usize,
    /// Longest wait for a response once sent; longer is an error and the connection is
    /// replaced.
    pub(crate) timeout: Duration,
    /// Whether a 2xx response body counts as a success.
    pub(crate) accept: fn(&[u8]) -> bool,
}

/// One released request.
enum Job {
    Send { k: usize, due: Instant },
    Stop,
}

/// The queue between the dispatcher and the connections.
struct Queue {
    jobs: Mutex<VecDeque<Job>>,
    ready: Notify,
}

impl Queue {
    fn push(&self, job: Job) {
        self.jobs.lock().push_back(job);
        self.ready.notify_one();
    }
}

/// Runs one open-loop rung: `rate × duration` requests released on schedule, then every
/// answer awaited.
pub(crate) fn drive(load: &Load<'_>) -> anyhow::Result<Measured> {
    let count = ((load.rate * load.duration.as_secs_f64()).round() as usize).max(1);
    let interval = Duration::from_secs_f64(1.0 / load.rate);
    let queue = Arc::new(Queue { jobs: Mutex::new(VecDeque::with_capacity(count)), ready: Notify::new() });
    let (connected_tx, connected_rx) = std::sync::mpsc::channel();

    let io = {
        let queue = queue.clone();
        let requests = load.requests.clone();
        let (addr, connections, timeout, accept) = (load.addr, load.connections, load.timeout, load.accept);
        std::thread::Builder::new().name("loadgen-io".into()).spawn(move || -> anyhow::Result<Measured> {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async move {
                let mut conns = Vec::with_capacity(connections);
                for _ in 0..connections {
                    conns.push(connect(addr).await?);
                }
                let _ = connected_tx.send(());
                let tasks: Vec<_> = conns
                    .into_iter()
                    .map(|stream| {
                        let worker =
                            Worker { addr, stream: Some(stream), buf: Vec::with_capacity(16 * 1024) };
                        tokio::spawn(worker.run(queue.clone(), requests.clone(), timeout, accept))
                    })
                    .collect();
                let mut total = Measured::default();
                for task in tasks {
                    let m = task.await.context("a load generator connection panicked")?;
                    total.latencies_us.extend(m.latencies_us);
                    total.errors += m.errors;
                    total.first_error = total.first_error.or(m.first_error);
                }
                Ok(total)
            })
        })?
    };
    if connected_rx.recv().is_err() {
        // The I/O thread ended before connecting: its error says why.
        return io.join().map_err(|_| anyhow::anyhow!("the load generator's I/O thread panicked"))?;
    }

    fine_grained_sleeps();
    let t0 = Instant::now() + Duration::from_millis(2);
    for k in 0..count {
        let due = t0 + interval.mul_f64(k as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        queue.push(Job::Send { k, due });
    }
    for _ in 0..load.connections {
        queue.push(Job::Stop);
    }
    io.join().map_err(|_| anyhow::anyhow!("the load generator's I/O thread panicked"))?
}

async fn connect(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpStream> {
    let stream =
        tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One connection of the open-loop generator.
struct Worker {
    addr: SocketAddr,
    /// `None` after an error, until the next request reconnects.
    stream: Option<tokio::net::TcpStream>,
    buf: Vec<u8>,
}

impl Worker {
    async fn run(
        mut self,
        queue: Arc<Queue>,
        requests: Arc<Vec<Vec<u8>>>,
        timeout: Duration,
        accept: fn(&[u8]) -> bool,
    ) -> Measured {
        let mut measured = Measured::default();
        loop {
            let job = queue.jobs.lock().pop_front();
            let (k, due) = match job {
                Some(Job::Send { k, due }) => (k, due),
                Some(Job::Stop) => return measured,
                None => {
                    queue.ready.notified().await;
                    continue;
                }
            };
            let request = &requests[k % requests.len()];
            let outcome = match tokio::time::timeout(timeout, self.round_trip(request)).await {
                Ok(Ok((status, end))) if (200..300).contains(&status) && accept(&self.buf[end.0..end.1]) => {
                    Ok(due.elapsed().as_secs_f64() * 1e6)
                }
                Ok(Ok((status, end))) => Err(format!(
                    "HTTP {status}: {}",
                    String::from_utf8_lossy(&self.buf[end.0..end.1.min(end.0 + 200)])
                )),
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(_) => Err(format!("no response within {timeout:?}")),
            };
            match outcome {
                Ok(latency) => measured.latencies_us.push(latency),
                Err(e) => {
                    // The connection's state is unknown: start the next request on a new one.
                    self.stream = None;
                    measured.errors += 1;
                    measured.first_error.get_or_insert(e);
                }
            }
        }
    }

    /// Sends one request and reads its response into `buf`: the status and the body's range.
    async fn round_trip(&mut self, request: &[u8]) -> anyhow::Result<(u16, (usize, usize))> {
        let stream = match &mut self.stream {
            Some(s) => s,
            None => self.stream.insert(connect(self.addr).await?),
        };
        self.buf.clear();
        stream.write_all(request).await.context("sending the request")?;
        loop {
            if let Some(f) = frame(&self.buf)? {
                if f.end != self.buf.len() {
                    bail!("the server sent more than one response");
                }
                return Ok((f.status, (f.body_start, f.end)));
            }
            self.buf.reserve(16 * 1024);
            if stream.read_buf(&mut self.buf).await.context("reading the response")? == 0 {
                bail!("the server closed the connection mid-response");
            }
        }
    }
}

/// Asks the kernel to wake this thread's sleeps on time: Linux lets a sleep overrun by the
/// thread's timer slack, 50 µs by default, which at 10,000 requests per second is half the
/// gap between two sends. Elsewhere sleeps keep the platform's precision.
fn fine_grained_sleeps() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument (nanoseconds) and changes only
    // the calling thread's timer slack; it touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_a_response_only_once_its_body_is_all_there() {
        let full = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        for cut in 0..full.len() {
            assert_eq!(frame(&full[..cut]).unwrap(), None, "cut at {cut}");
        }
        let f = frame(full).unwrap().unwrap();
        assert_eq!((f.status, &full[f.body_start..f.end]), (200, &b"hello"[..]));
        let two = [&full[..], &full[..]].concat();
        assert_eq!(frame(&two).unwrap().unwrap().end, full.len());
    }

    #[test]
    fn refuses_responses_it_cannot_frame() {
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        assert!(format!("{:#}", frame(chunked).unwrap_err()).contains("chunked"));
        let unframed = b"HTTP/1.1 200 OK\r\n\r\nhello";
        assert!(format!("{:#}", frame(unframed).unwrap_err()).contains("content-length"));
        let bad_length = b"HTTP/1.1 200 OK\r\ncontent-length: five\r\n\r\n";
        assert!(format!("{:#}", frame(bad_length).unwrap_err()).contains("content-length"));
        assert!(frame(b"SMTP ready\r\n\r\n").is_err());
        let no_content = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(frame(no_content).unwrap().unwrap().end, no_content.len());
    }

    /// Against a real hyper server: every request answered, on schedule, and a refused body
    /// or a dead server counted as errors, never lost.
    #[test]
    fn drives_a_real_server_open_loop_and_counts_failures() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/echo", axum::routing::post(|body: String| async move { body }));
        rt.spawn(async move { axum::serve(listener, app).await });

        let requests = Arc::new(vec![post_json(addr, "/echo", b"yes"), post_json(addr, "/echo", b"no")]);
        let load = Load {
            addr,
            requests: &requests,
            rate: 2000.0,
            duration: Duration::from_millis(100),
            connections: 4,
            timeout: Duration::from_secs(2),
            accept: |body| body == b"yes",
        };
        let m = drive(&load).unwrap();
        assert_eq!((m.latencies_us.len(), m.errors), (100, 100));
        assert!(m.first_error.unwrap().contains("HTTP 200"));

        let mut conn = Conn::connect(addr).unwrap();
        let (status, body) = conn.round_trip(&requests[0]).unwrap();
        assert_eq!((status, body), (200, &b"yes"[..]));
        let (status, _) = conn.round_trip(&get(addr, "/nowhere")).unwrap();
        assert_eq!(status, 404);

        drop(rt);
        let refused = drive(&Load { accept: |_| true, ..load }).unwrap_err();
        assert!(format!("{refused:#}").contains("connecting"));
    }
}
