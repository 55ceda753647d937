//! The tier transport and upstream health over real QUIC on 127.0.0.1, with certificates
//! generated here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cascade_runtime::Tensor;
use cascade_runtime::protocol::{
    ErrorFrame, ErrorKind, EscalationAnswer, EscalationRequest, Frame, NamedTensor, StageTiming, decode,
};
use cascade_runtime::transport::certs::{Ca, Issued, Role};
use cascade_runtime::transport::{
    ClientConfig, RequestContext, Response, ServerConfig, TierClient, TierServer, TlsIdentity, TransportError,
};
use cascade_runtime::upstream::{
    BreakerConfig, BreakerState, EscalationError, Origin, RetryConfig, UpstreamClient, UpstreamConfig,
};
use rustls::pki_types::pem::PemObject;

/// A CA for one test, named so that tests can make several.
pub(crate) fn new_ca(name: &str) -> Ca {
    Ca::named(name).unwrap()
}

pub(crate) const CENTRAL: &str = "central.cascade";

pub(crate) fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub(crate) fn request(id: u64, budget: Duration) -> EscalationRequest {
    let pixels: Vec<f32> = (0..784).map(|i| (i % 255) as f32 / 255.0).collect();
    EscalationRequest {
        id,
        route: "digits".into(),
        inputs: vec![NamedTensor {
            name: "input".into(),
            tensor: Tensor::from_f32(vec![1, 1, 28, 28], &pixels).unwrap(),
        }],
        budget_us: budget.as_micros() as u64,
        trace: None,
        node_id: "edge-1".into(),
        local_confidence: Some(0.42),
    }
}

/// Sends `request` with its budget, counted from now.
pub(crate) async fn send(
    client: &TierClient,
    request: &EscalationRequest,
) -> Result<Response, TransportError> {
    client.request(request, Instant::now() + Duration::from_micros(request.budget_us)).await
}

/// Answers with the sum of the input, so the test can check the input really arrived.
pub(crate) async fn sum_handler(
    req: EscalationRequest,
    ctx: RequestContext,
) -> Result<EscalationAnswer, ErrorFrame> {
    let sum: f32 = req.inputs[0].tensor.to_f32().unwrap().iter().sum();
    let left = ctx.deadline.saturating_duration_since(Instant::now());
    Ok(EscalationAnswer {
        id: req.id,
        outputs: vec![NamedTensor { name: "sum".into(), tensor: Tensor::from_f32(vec![1], &[sum]).unwrap() }],
        confidence: 0.99,
        label: Some(7),
        model_version: format!("central for {}", req.node_id),
        timings: vec![StageTiming { stage: "deadline_left_ms".into(), micros: left.as_millis() as u64 }],
    })
}

pub(crate) fn client(identity: &TlsIdentity, addr: SocketAddr, name: &str) -> TierClient {
    let mut config = ClientConfig::new(addr, name);
    // Loopback handshakes take milliseconds; a short connect timeout lets a 1 s request see
    // a dead upstream as a failed connection rather than running out its deadline.
    config.connect_timeout = Duration::from_millis(300);
    config.backoff_max = Duration::from_millis(200);
    TierClient::new(identity, config).unwrap()
}

#[tokio::test]
async fn request_and_answer_round_trip() {
    let ca = new_ca("test ca");
    let server = TierServer::bind(
        &ca.identity(CENTRAL, Role::Central, &ca).unwrap(),
        ServerConfig::new(loopback()),
        sum_handler,
    )
    .unwrap();
    let client = client(&ca.identity("edge-1", Role::Edge, &ca).unwrap(), server.local_addr(), CENTRAL);

    let req = request(11, Duration::from_secs(5));
    let expected: f32 = req.inputs[0].tensor.to_f32().unwrap().iter().sum();
    for id in [11, 12] {
        let mut req = req.clone();
        req.id = id;
        let answer = send(&client, &req).await.unwrap().expect("an answer");
        assert_eq!(answer.id, id);
        assert_eq!(answer.outputs[0].tensor.to_f32().unwrap(), vec![expected]);
        assert_eq!((answer.confidence, answer.label), (0.99, Some(7)));
        assert_eq!(answer.model_version, "central for edge-1");
        // The server saw the propagated deadline: about 5 s left, certainly more than 3.
        assert!(answer.timings[0].micros > 3000 && answer.timings[0].micros <= 5000, "{:?}", answer.timings);
    }
    server.shutdown().await;
}

/// An upstream whose queue is full: refuses every request, retryably.
async fn overloaded(req: EscalationRequest, _ctx: RequestContext) -> Result<EscalationAnswer, ErrorFrame> {
    Err(ErrorFrame { id: req.id, kind: ErrorKind::Overloaded, retryable: true, message: "queue full".into() })
}

#[tokio::test]
async fn upstream_error_frames_reach_the_client() {
    let ca = new_ca("test ca");
    let server = TierServer::bind(
        &ca.identity(CENTRAL, Role::Central, &ca).unwrap(),
        ServerConfig::new(loopback()),
        overloaded,
    )
    .unwrap();
    let client = client(&ca.identity("edge-1", Role::Edge, &ca).unwrap(), server.local_addr(), CENTRAL);
    let Err(e) = send(&client, &request(3, Duration::from_secs(5))).await.unwrap() else {
        panic!("expected an error frame")
    };
    assert_eq!((e.id, e.kind, e.retryable), (3, ErrorKind::Overloaded, true));
}

/// A server whose handler counts its calls.
pub(crate) fn counting_server(ca: &Ca) -> (TierServer, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let handler = move |req: EscalationRequest, ctx: RequestContext| {
        counter.fetch_add(1, Ordering::SeqCst);
        sum_handler(req, ctx)
    };
    (
        TierServer::bind(
            &ca.identity(CENTRAL, Role::Central, ca).unwrap(),
            ServerConfig::new(loopback()),
            handler,
        )
        .unwrap(),
        calls,
    )
}

#[tokio::test]
async fn client_signed_by_another_ca_is_refused() {
    let ca = new_ca("deployment ca");
    let rogue = new_ca("rogue ca");
    let (server, calls) = counting_server(&ca);
    // Signed by the rogue CA, but trusting the real one: it can verify the server, the server
    // cannot verify it.
    let client = client(&rogue.identity("edge-1", Role::Edge, &ca).unwrap(), server.local_addr(), CENTRAL);
    let err = send(&client, &request(1, Duration::from_secs(3))).await.unwrap_err();
    assert!(
        matches!(err, TransportError::Connect { .. } | TransportError::ConnectionLost { .. }),
        "unexpected error: {err}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

/// A bare quinn client config trusting `ca`, presenting `identity` (PEM cert and key) if any:
/// lets a test speak to the server without going through `TierClient`.
pub(crate) fn raw_quic_client(ca: &Ca, identity: Option<Issued>) -> quinn::crypto::rustls::QuicClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap()).unwrap();
    let builder =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots);
    let mut tls = match identity {
        None => builder.with_no_client_auth(),
        Some(issued) => builder
            .with_client_auth_cert(
                vec![rustls::pki_types::CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap()],
                rustls::pki_types::PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    tls.alpn_protocols = vec![cascade_runtime::transport::ALPN.to_vec()];
    quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap()
}

#[tokio::test]
async fn unknown_protocol_version_gets_an_error_frame() {
    let ca = new_ca("deployment ca");
    let (server, calls) = counting_server(&ca);
    let quic = raw_quic_client(&ca, Some(ca.issue("edge-1", Role::Edge, &[]).unwrap()));
    let endpoint = quinn::Endpoint::client(loopback()).unwrap();
    let connection = endpoint
        .connect_with(quinn::ClientConfig::new(Arc::new(quic)), server.local_addr(), CENTRAL)
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    let mut frame = cascade_runtime::protocol::encode_request(
        &request(5, Duration::from_secs(3)),
        Duration::from_secs(3),
        &Default::default(),
    )
    .unwrap();
    frame[0] = 99; // a future version
    send.write_all(&frame).await.unwrap();
    send.finish().unwrap();
    let reply = recv.read_to_end(1 << 20).await.unwrap();
    let Frame::Error(e) = decode(&reply, &Default::default()).unwrap() else {
        panic!("expected an error frame")
    };
    assert_eq!((e.kind, e.retryable), (ErrorKind::UnsupportedVersion, false));
    assert!(e.message.contains("version 99"), "{}", e.message);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let ca = new_ca("deployment ca");
    let (server, calls) = counting_server(&ca);

    // A plain QUIC client that trusts the CA but has no certificate of its own.
    let quic = raw_quic_client(&ca, None);
    let endpoint = quinn::Endpoint::client(loopback()).unwrap();
    let connection = endpoint
        .connect_with(quinn::ClientConfig::new(Arc::new(quic)), server.local_addr(), CENTRAL)
        .unwrap()
        .await;
    // The client may finish its side of the handshake before the server checks it; then the
    // server closes the connection right after. Either way no request gets through.
    match connection {
        Err(e) => assert!(e.to_string().contains("handshake"), "unexpected error: {e}"),
        Ok(connection) => {
            let exchange = async {
                let (mut send, mut recv) = connection.open_bi().await?;
                let req = cascade_runtime::protocol::encode_request(
                    &request(1, Duration::from_secs(3)),
                    Duration::from_secs(3),
                    &Default::default(),
                )?;
                send.write_all(&req).await?;
                send.finish()?;
                Ok::<_, anyhow::Error>(recv.read_to_end(1 << 20).await?)
            };
            let result = tokio::time::timeout(Duration::from_secs(5), exchange).await.unwrap();
            assert!(result.is_err(), "the request got through");
            let reason = connection.closed().await.to_string();
            assert!(reason.contains("handshake"), "unexpected close reason: {reason}");
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn client_trusting_another_ca_refuses_the_server() {
    let ca = new_ca("deployment ca");
    let other = new_ca("other ca");
    let (server, calls) = counting_server(&ca);
    // A valid certificate from the deployment CA, but it trusts only the other CA.
    let client = client(&ca.identity("edge-1", Role::Edge, &other).unwrap(), server.local_addr(), CENTRAL);
    let err = send(&client, &request(1, Duration::from_secs(3))).await.unwrap_err();
    assert!(matches!(err, TransportError::Connect { .. }), "unexpected error: {err}");
    assert!(err.to_string().contains("UnknownIssuer"), "unexpected error: {err}");
    assert!(err.retryable());
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn wrong_server_name_is_refused() {
    let ca = new_ca("deployment ca");
    let (server, calls) = counting_server(&ca);
    let client =
        client(&ca.identity("edge-1", Role::Edge, &ca).unwrap(), server.local_addr(), "elsewhere.cascade");
    let err = send(&client, &request(1, Duration::from_secs(3))).await.unwrap_err();
    assert!(matches!(err, TransportError::Connect { .. }), "unexpected error: {err}");
    assert!(err.to_string().contains("not valid for name"), "unexpected error: {err}");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

/// Sets a flag when dropped, to see that the server cancelled a handler.
struct DropFlag(Arc<AtomicUsize>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn hung_server_hits_the_deadline_on_both_sides() {
    let ca = new_ca("deployment ca");
    let cancelled = Arc::new(AtomicUsize::new(0));
    let flag = cancelled.clone();
    let handler = move |req: EscalationRequest, ctx: RequestContext| {
        let guard = DropFlag(flag.clone());
        async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(guard);
            sum_handler(req, ctx).await
        }
    };
    let server = TierServer::bind(
        &ca.identity(CENTRAL, Role::Central, &ca).unwrap(),
        ServerConfig::new(loopback()),
        handler,
    )
    .unwrap();
    let client = client(&ca.identity("edge-1", Role::Edge, &ca).unwrap(), server.local_addr(), CENTRAL);
    let started = Instant::now();
    let err = send(&client, &request(1, Duration::from_millis(300))).await.unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(err, TransportError::DeadlineExceeded { .. }), "unexpected error: {err}");
    // Promptly: at the deadline, not at the handler's 30 s. (A wide margin for a busy machine.)
    assert!(waited >= Duration::from_millis(250) && waited < Duration::from_secs(3), "waited {waited:?}");
    // The server dropped the hung handler at the deadline too.
    let until = Instant::now() + Duration::from_secs(3);
    while cancelled.load(Ordering::SeqCst) == 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cancelled.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn restarted_server_on_the_same_port_is_reconnected() {
    let ca = new_ca("deployment ca");
    let server_id = ca.identity(CENTRAL, Role::Central, &ca).unwrap();
    let server = TierServer::bind(&server_id, ServerConfig::new(loopback()), sum_handler).unwrap();
    let addr = server.local_addr();
    let client = client(&ca.identity("edge-1", Role::Edge, &ca).unwrap(), addr, CENTRAL);
    assert!(matches!(send(&client, &request(1, Duration::from_secs(3))).await, Ok(Ok(_))));

    server.shutdown().await;
    drop(server);
    let err = send(&client, &request(2, Duration::from_secs(1))).await.unwrap_err();
    assert!(err.retryable(), "a lost upstream is worth retrying: {err}");

    // The port is free again once the old endpoint's socket is closed.
    let until = Instant::now() + Duration::from_secs(5);
    let server = loop {
        match TierServer::bind(&server_id, ServerConfig::new(addr), sum_handler) {
            Ok(s) => break s,
            Err(_) if Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot rebind {addr}: {e}"),
        }
    };
    let until = Instant::now() + Duration::from_secs(10);
    let mut attempts = 0;
    loop {
        attempts += 1;
        match send(&client, &request(3, Duration::from_secs(1))).await {
            Ok(Ok(a)) => {
                assert_eq!(a.id, 3);
                break;
            }
            other if Instant::now() < until => {
                assert!(other.as_ref().map_err(|e| e.retryable()).unwrap_err(), "{other:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("no recovery after {attempts} attempts: {other:?}"),
        }
    }
    server.shutdown().await;
}

/// An upstream client over `addrs`, with a small breaker so tests trip it quickly.
fn upstream_client(ca: &Ca, addrs: &[SocketAddr], breaker: BreakerConfig) -> UpstreamClient {
    let configs = addrs
        .iter()
        .map(|&addr| {
            let mut c = ClientConfig::new(addr, CENTRAL);
            c.backoff_max = Duration::from_millis(200);
            c
        })
        .collect();
    let config = UpstreamConfig { upstreams: configs, breaker, retry: RetryConfig::default() };
    UpstreamClient::new(&ca.identity("edge-1", Role::Edge, ca).unwrap(), config).unwrap()
}

#[tokio::test]
async fn slow_upstream_trips_the_breaker_and_a_probe_closes_it() {
    let ca = new_ca("deployment ca");
    let delay_ms = Arc::new(AtomicUsize::new(150));
    let delay = delay_ms.clone();
    let handler = move |req: EscalationRequest, ctx: RequestContext| {
        let wait = Duration::from_millis(delay.load(Ordering::SeqCst) as u64);
        async move {
            tokio::time::sleep(wait).await;
            sum_handler(req, ctx).await
        }
    };
    let server = TierServer::bind(
        &ca.identity(CENTRAL, Role::Central, &ca).unwrap(),
        ServerConfig::new(loopback()),
        handler,
    )
    .unwrap();
    let breaker = BreakerConfig {
        failure_threshold: 3,
        latency_limit: Duration::from_millis(100),
        open_for: Duration::from_millis(400),
        half_open_probes: 1,
    };
    let upstream = upstream_client(&ca, &[server.local_addr()], breaker);

    // Slow answers still arrive, but each counts against the upstream.
    for id in 0..3 {
        assert!(upstream.escalate(&request(id, Duration::from_secs(5))).await.is_ok());
    }
    assert_eq!(upstream.members()[0].1.breaker, BreakerState::Open);
    assert!(!upstream.available());
    let started = Instant::now();
    let err = upstream.escalate(&request(3, Duration::from_secs(5))).await.unwrap_err();
    assert!(matches!(err, EscalationError::NoUpstream), "unexpected error: {err}");
    assert_eq!((err.origin(), err.retryable()), (Origin::Local, true));
    assert!(started.elapsed() < Duration::from_millis(100), "an open breaker refuses at once");

    // The upstream recovers; after the pause one probe goes through and closes the breaker.
    delay_ms.store(0, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(upstream.available());
    let answer = upstream.escalate(&request(4, Duration::from_secs(5))).await.unwrap();
    assert_eq!(answer.id, 4);
    assert_eq!(upstream.members()[0].1.breaker, BreakerState::Closed);
    server.shutdown().await;
}

/// A half-open probe whose caller goes away must give its slot back: otherwise the breaker
/// would wait for a probe that never reports, and refuse every later escalation.
#[tokio::test]
async fn a_cancelled_probe_does_not_leave_the_breaker_stuck() {
    let ca = new_ca("deployment ca");
    let slow = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let handler = {
        let slow = slow.clone();
        move |req: EscalationRequest, ctx: RequestContext| {
            let wait = if slow.load(Ordering::SeqCst) { Duration::from_secs(3) } else { Duration::ZERO };
            async move {
                tokio::time::sleep(wait).await;
                sum_handler(req, ctx).await
            }
        }
    };
    let server = TierServer::bind(
        &ca.identity(CENTRAL, Role::Central, &ca).unwrap(),
        ServerConfig::new(loopback()),
        handler,
    )
    .unwrap();
    let breaker = BreakerConfig {
        failure_threshold: 1,
        latency_limit: Duration::from_millis(100),
        open_for: Duration::from_millis(200),
        half_open_probes: 1,
    };
    let upstream = upstream_client(&ca, &[server.local_addr()], breaker);
    // One escalation that runs out of time opens the breaker.
    assert!(upstream.escalate(&request(1, Duration::from_millis(300))).await.is_err());
    assert_eq!(upstream.members()[0].1.breaker, BreakerState::Open);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(upstream.breaker_state(), BreakerState::HalfOpen);
    // The probe's caller gives up long before the request's own deadline.
    let probing = request(2, Duration::from_secs(5));
    let probe = tokio::time::timeout(Duration::from_millis(50), upstream.escalate(&probing));
    assert!(probe.await.is_err(), "the probe should still be waiting");
    assert!(upstream.available(), "the cancelled probe still holds the breaker's only probe slot");
    assert_eq!(upstream.members()[0].1.in_flight, 0, "a cancelled attempt leaked its in-flight count");
    // The upstream recovers: the next escalation probes, and the breaker closes.
    slow.store(false, Ordering::SeqCst);
    let answer = upstream.escalate(&request(3, Duration::from_secs(5))).await.unwrap();
    assert_eq!(answer.id, 3);
    assert_eq!(upstream.breaker_state(), BreakerState::Closed);
    server.shutdown().await;
}

#[tokio::test]
async fn escalation_fails_over_to_a_live_upstream() {
    let ca = new_ca("deployment ca");
    let live = TierServer::bind(
        &ca.identity(CENTRAL, Role::Central, &ca).unwrap(),
        ServerConfig::new(loopback()),
        sum_handler,
    )
    .unwrap();
    // An address where nothing listens any more.
    let dead = TierServer::bind(
        &ca.identity(CENTRAL, Role::Central, &ca).unwrap(),
        ServerConfig::new(loopback()),
        sum_handler,
    )
    .unwrap();
    let dead_addr = dead.local_addr();
    dead.shutdown().await;

    let breaker = BreakerConfig { failure_threshold: 1, ..BreakerConfig::default() };
    let upstream = upstream_client(&ca, &[dead_addr, live.local_addr()], breaker);
    for id in 0..20 {
        // Whichever upstream is picked first, every escalation is answered by the live one.
        let answer = upstream.escalate(&request(id, Duration::from_secs(3))).await.unwrap();
        assert_eq!(answer.id, id);
    }
    let members = upstream.members();
    assert_eq!(members[1].1.breaker, BreakerState::Closed);
    assert_ne!(members[0].1.breaker, BreakerState::Closed, "the dead one was tried and marked");

    live.shutdown().await;
    let err = upstream.escalate(&request(9, Duration::from_millis(500))).await.unwrap_err();
    assert_ne!(err.origin(), Origin::Upstream, "nobody answered: {err}");
}

#[tokio::test]
async fn requests_fail_fast_while_a_dead_upstream_backs_off() {
    let ca = new_ca("deployment ca");
    let dead = TierServer::bind(
        &ca.identity(CENTRAL, Role::Central, &ca).unwrap(),
        ServerConfig::new(loopback()),
        sum_handler,
    )
    .unwrap();
    let addr = dead.local_addr();
    dead.shutdown().await;
    let mut config = ClientConfig::new(addr, CENTRAL);
    config.connect_timeout = Duration::from_millis(300);
    config.backoff_initial = Duration::from_secs(30);
    config.backoff_max = Duration::from_secs(60);
    let client = TierClient::new(&ca.identity("edge-1", Role::Edge, &ca).unwrap(), config).unwrap();

    // Concurrent requests share one connection attempt, which fails on its own timeout.
    let (first, second) = (request(1, Duration::from_secs(5)), request(2, Duration::from_secs(5)));
    let (a, b) = tokio::join!(send(&client, &first), send(&client, &second));
    for err in [a.unwrap_err(), b.unwrap_err()] {
        assert!(matches!(err, TransportError::Connect { .. }), "unexpected error: {err}");
    }
    // Then the backoff answers at once, with no new attempt.
    let err = send(&client, &request(3, Duration::from_secs(5))).await.unwrap_err();
    let TransportError::Backoff { retry_in, .. } = err else { panic!("unexpected error: {err}") };
    assert!(retry_in > Duration::from_secs(25));
    assert!(err.retryable());
}

#[tokio::test]
async fn a_stream_that_stalls_before_its_request_is_dropped() {
    let ca = new_ca("deployment ca");
    let mut config = ServerConfig::new(loopback());
    config.read_timeout = Duration::from_millis(200);
    let server =
        TierServer::bind(&ca.identity(CENTRAL, Role::Central, &ca).unwrap(), config, sum_handler).unwrap();
    let quic = raw_quic_client(&ca, Some(ca.issue("edge-1", Role::Edge, &[]).unwrap()));
    let endpoint = quinn::Endpoint::client(loopback()).unwrap();
    let connection = endpoint
        .connect_with(quinn::ClientConfig::new(Arc::new(quic)), server.local_addr(), CENTRAL)
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    // Half a header, then nothing.
    send.write_all(&[cascade_runtime::protocol::PROTOCOL_VERSION, 0]).await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(1024)).await.unwrap();
    let err = outcome.unwrap_err().to_string();
    assert!(err.contains("reset"), "unexpected outcome: {err}");
    // The connection itself stays usable for well-behaved streams.
    assert!(connection.close_reason().is_none());
}

#[tokio::test]
async fn overloaded_upstream_is_retried_elsewhere_within_the_budget() {
    let ca = new_ca("deployment ca");
    let busy = TierServer::bind(
        &ca.identity(CENTRAL, Role::Central, &ca).unwrap(),
        ServerConfig::new(loopback()),
        overloaded,
    )
    .unwrap();
    let idle = TierServer::bind(
        &ca.identity(CENTRAL, Role::Central, &ca).unwrap(),
        ServerConfig::new(loopback()),
        sum_handler,
    )
    .unwrap();
    let breaker = BreakerConfig { failure_threshold: 1000, ..BreakerConfig::default() };

    let both = upstream_client(&ca, &[busy.local_addr(), idle.local_addr()], breaker);
    for id in 0..10 {
        assert_eq!(both.escalate(&request(id, Duration::from_secs(3))).await.unwrap().id, id);
    }

    // Alone, the busy upstream's refusal reaches the caller, marked as its own and retryable.
    let alone = upstream_client(&ca, &[busy.local_addr()], breaker);
    let err = alone.escalate(&request(1, Duration::from_secs(3))).await.unwrap_err();
    assert!(matches!(err, EscalationError::Upstream { kind: ErrorKind::Overloaded, .. }), "{err}");
    assert_eq!((err.origin(), err.retryable()), (Origin::Upstream, true));
}
