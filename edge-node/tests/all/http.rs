//! The HTTP listener's limits against misbehaving clients, over raw TCP: a head or a body
//! that does not arrive, an idle kept-alive connection, too many connections, and a
//! shutdown with a connection that never finishes its request.
//!
//! The limits are short here and every wait has a bound: each check allows seconds of slack
//! on the side a loaded machine can push it (late), none on the side it cannot (early).

use std::time::{Duration, Instant};

use cascade_runtime::config::ListenersConfig;
use cascade_testkit::{client, edge, get_text, image_body, post, resolve};
use edge_node::serve::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How late past a limit a connection may still close and pass.
const SLACK: Duration = Duration::from_secs(4);

const GET_LIVE: &[u8] = b"GET /v2/health/live HTTP/1.1\r\nhost: node\r\n\r\n";
const HALF_A_HEADER: &[u8] = b"GET /v2/health/live HTTP/1.1\r\nhost: no";

/// An edge node whose `[listeners]` section `limits` sets.
async fn node(file: &str, limits: impl FnOnce(&mut ListenersConfig)) -> Server {
    let mut config = edge(0.0, None);
    limits(&mut config.node.listeners);
    Server::start(resolve(file, &config)).await.unwrap()
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// One response read off a kept-alive connection: its status, head (lowercased) and body.
async fn response(stream: &mut TcpStream) -> (u16, String, String) {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&bytes[..end]).to_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |n| n.trim().parse().unwrap());
                if bytes.len() >= end + 4 + length {
                    let body = String::from_utf8_lossy(&bytes[end + 4..end + 4 + length]).into_owned();
                    let status = head[9..12].parse().unwrap();
                    return (status, head, body);
                }
            }
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed mid-response: {:?}", String::from_utf8_lossy(&bytes));
            bytes.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(SLACK, read).await.expect("no response")
}

/// Reads until the node closes the connection, for at most `within`: what it sent, or
/// `None` if the connection was still open then.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut sent = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => sent.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(within, read).await.ok().map(|()| sent)
}

/// A connection that started a request and stopped: it never got an answer, and it closed
/// at the header limit, whether the head stalled on a fresh connection, trickled in byte
/// by byte, or stalled on a kept-alive connection (whose idle limit is much longer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_that_does_not_arrive_is_closed_after_the_header_timeout() {
    let header_read = Duration::from_secs(1);
    let server = node("header-timeout.toml", |l| {
        l.http_header_timeout_ms = ms(header_read);
        l.http_idle_timeout_ms = 60_000;
    })
    .await;
    let addr = server.http_addr();

    let stalled = async {
        // Before the connect: the node's clock cannot start earlier.
        let start = Instant::now();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(HALF_A_HEADER).await.unwrap();
        let sent = closed_within(&mut stream, header_read + SLACK).await;
        let sent = sent.expect("a half header held its connection past the header limit");
        assert!(
            start.elapsed() >= header_read - Duration::from_millis(100),
            "closed early: {:?}",
            start.elapsed()
        );
        assert!(!String::from_utf8_lossy(&sent).contains(" 200 "), "answered a half header");
    };
    let trickled = async {
        let start = Instant::now();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut request = b"GET /v2/health/live HTTP/1.1\r\nhost: node\r\nx-padding: ".to_vec();
        request.extend([b'a'; 200]);
        for byte in request {
            if stream.write_all(&[byte]).await.is_err() {
                break;
            }
            if closed_within(&mut stream, Duration::from_millis(100)).await.is_some() {
                break;
            }
            assert!(start.elapsed() < header_read + SLACK, "a trickled head held its connection");
        }
        assert!(start.elapsed() < header_read + SLACK, "a trickled head held its connection");
    };
    let kept_alive = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(GET_LIVE).await.unwrap();
        assert_eq!(response(&mut stream).await.0, 200);
        stream.write_all(HALF_A_HEADER).await.unwrap();
        let closed = closed_within(&mut stream, header_read + SLACK).await;
        assert!(closed.is_some(), "a half header on a kept-alive connection waited for the idle limit");
    };
    tokio::join!(stalled, trickled, kept_alive);
    server.shutdown().await.unwrap();
}

/// A head trickled in within the header limit is read and answered, on a fresh connection
/// and on a kept-alive one: reading a trickled head is put off a random moment at a time (so
/// that many trickling at once do not hold up other requests), never dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_trickled_within_the_header_limit_is_answered() {
    let server = node("header-trickled.toml", |l| l.http_header_timeout_ms = 10_000).await;
    let mut stream = TcpStream::connect(server.http_addr()).await.unwrap();
    for _ in 0..2 {
        // Five pieces 80 ms apart: from the third on, the head counts as trickled.
        for piece in GET_LIVE.chunks(GET_LIVE.len().div_ceil(5)) {
            stream.write_all(piece).await.unwrap();
            tokio::time::sleep(Duration::from_millis(80)).await;
        }
        let (status, _, body) = response(&mut stream).await;
        assert_eq!(status, 200, "{body}");
    }
    server.shutdown().await.unwrap();
}

/// A body that trickles in slower than the body limit gets 408 and its connection closed;
/// the node goes on answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_body_is_cut_off_with_408() {
    let body_read = Duration::from_secs(1);
    let server = node("body-timeout.toml", |l| l.http_body_timeout_ms = ms(body_read)).await;
    let addr = server.http_addr();

    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let start = Instant::now();
    let trickle = tokio::spawn(async move {
        let head = "POST /v2/models/digits/infer HTTP/1.1\r\nhost: node\r\ncontent-type: application/json\r\n\
                    content-length: 4000\r\n\r\n{";
        writer.write_all(head.as_bytes()).await.unwrap();
        // Far slower than 4000 bytes a second, for longer than the check waits.
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if writer.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let mut sent = Vec::new();
    let read = tokio::time::timeout(body_read + SLACK, reader.read_to_end(&mut sent)).await;
    let sent = String::from_utf8_lossy(&sent);
    assert!(read.is_ok(), "the trickling body held its connection: {sent:?}");
    assert!(sent.starts_with("HTTP/1.1 408 "), "{sent}");
    assert!(sent.to_lowercase().contains("\r\nconnection: close\r\n"), "{sent}");
    let body: serde_json::Value = serde_json::from_str(sent.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert!(body["error"].as_str().unwrap().contains("request body did not arrive"), "{body}");
    assert!(
        start.elapsed() >= body_read - Duration::from_millis(100),
        "cut off early: {:?}",
        start.elapsed()
    );
    trickle.abort();

    let r = post(&client(), addr, "digits", &serde_json::to_vec(&image_body(0)).unwrap()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    server.shutdown().await.unwrap();
}

/// A kept-alive connection outlives the (shorter) header limit between requests, then is
/// closed once it has waited the idle limit for its next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let (header_read, idle) = (Duration::from_millis(500), Duration::from_secs(4));
    let server = node("idle-timeout.toml", |l| {
        l.http_header_timeout_ms = ms(header_read);
        l.http_idle_timeout_ms = ms(idle);
    })
    .await;
    let mut stream = TcpStream::connect(server.http_addr()).await.unwrap();
    stream.write_all(GET_LIVE).await.unwrap();
    assert_eq!(response(&mut stream).await.0, 200);
    // Three header limits between requests: still well inside the idle limit.
    tokio::time::sleep(header_read * 3).await;
    // Before the request: the node's idle clock starts after its answer.
    let idle_from = Instant::now();
    stream.write_all(GET_LIVE).await.unwrap();
    let (status, head, _) = response(&mut stream).await;
    assert_eq!(status, 200, "{head}");
    let closed = closed_within(&mut stream, idle + SLACK).await;
    assert_eq!(closed.as_deref(), Some(&[][..]), "an idle connection was kept past the idle limit");
    assert!(idle_from.elapsed() >= idle, "closed early: {:?}", idle_from.elapsed());
    server.shutdown().await.unwrap();
}

/// Past the connection cap a new connection gets a 503 with Retry-After at once; once a
/// connection closes, the node answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_a_connection_gets_503_until_one_closes() {
    let server = node("connection-cap.toml", |l| l.http_max_connections = 3).await;
    let addr = server.http_addr();
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(GET_LIVE).await.unwrap();
        assert_eq!(response(&mut stream).await.0, 200);
        held.push(stream);
    }

    let mut refused = TcpStream::connect(addr).await.unwrap();
    refused.write_all(GET_LIVE).await.unwrap();
    let sent = closed_within(&mut refused, SLACK).await.expect("the refused connection was left open");
    let sent = String::from_utf8_lossy(&sent);
    assert!(sent.starts_with("HTTP/1.1 503 "), "{sent}");
    assert!(sent.to_lowercase().contains("\r\nretry-after: 1\r\n"), "{sent}");
    let body = sent.split("\r\n\r\n").nth(1).unwrap();
    assert_eq!(body.trim_end().lines().count(), 1, "{body:?}");
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert!(body["error"].as_str().unwrap().contains("connection limit"), "{body}");
    drop(refused);
    // A client that sends nothing is refused too, without waiting for its request.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let sent = closed_within(&mut silent, SLACK).await.expect("the silent refused connection was left open");
    assert!(String::from_utf8_lossy(&sent).starts_with("HTTP/1.1 503 "));
    // A stock HTTP client reads the refusal as a 503, not as a broken connection: the
    // refusal waits for the request to start before it answers.
    let c = client();
    for i in 0..20 {
        let status =
            c.get(format!("http://{addr}/v2/health/ready")).send().await.map(|r| r.status().as_u16());
        assert!(matches!(status, Ok(503)), "{i} {status:?}");
    }

    drop(held.pop());
    let image = serde_json::to_vec(&image_body(0)).unwrap();
    let start = Instant::now();
    loop {
        // The slot comes back once the node has seen the close; until then, 503. The client
        // may also open a second connection while its first is still pooled, which the
        // full cap refuses as well: so it is the inference request that is retried.
        let r = c
            .post(format!("http://{addr}/v2/models/digits/infer"))
            .header("content-type", "application/json")
            .body(image.clone())
            .send()
            .await;
        match r.as_ref().map(|r| r.status().as_u16()) {
            Ok(200) => break,
            Ok(503) | Err(_) => {}
            Ok(status) => panic!("{status} while the cap was full"),
        }
        assert!(start.elapsed() < SLACK, "a closed connection never gave its slot back: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.shutdown().await.unwrap();
}

/// A connection that never finishes its request does not hold shutdown past the drain
/// limit, and is closed by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_a_hung_connection_returns_within_the_drain_limit() {
    let drain = Duration::from_secs(1);
    let server = node("drain-limit.toml", |l| {
        l.http_header_timeout_ms = 60_000;
        l.drain_timeout_ms = ms(drain);
    })
    .await;
    let addr = server.http_addr();
    let mut hung = TcpStream::connect(addr).await.unwrap();
    hung.write_all(HALF_A_HEADER).await.unwrap();
    // Connections are accepted in order: one answered after it means `hung` is being served.
    assert_eq!(get_text(&client(), addr, "/v2/health/live").await.0, 200);

    let shutdown = tokio::time::timeout(drain + SLACK, server.shutdown()).await;
    shutdown.expect("shutdown waited on a hung connection past the drain limit").unwrap();
    let closed = closed_within(&mut hung, SLACK).await;
    assert!(closed.is_some(), "the hung connection outlived the shutdown");
}
