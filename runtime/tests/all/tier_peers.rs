//! What a downstream node may do to an upstream, and what it may make the upstream hold:
//! certificate roles and names, the allowlist, connection caps, read budgets, request
//! budgets, cancellation and the drain on shutdown. Real QUIC on 127.0.0.1.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cascade_runtime::protocol::{
    ErrorFrame, ErrorKind, EscalationAnswer, EscalationRequest, PROTOCOL_VERSION, ProtocolLimits,
};
use cascade_runtime::transport::certs::{Ca, Role};
use cascade_runtime::transport::{Allowlist, RequestContext, ServerConfig, TierServer, TransportError};

use super::tiers::{CENTRAL, client, loopback, new_ca, raw_quic_client, request, send, sum_handler};

/// A raw connection to `server` presenting a certificate for `name` in `role`.
async fn raw_connection(ca: &Ca, server: &TierServer, name: &str, role: Role) -> quinn::Connection {
    let quic = raw_quic_client(ca, Some(ca.issue(name, role, &[]).unwrap()));
    let endpoint = quinn::Endpoint::client(loopback()).unwrap();
    endpoint
        .connect_with(quinn::ClientConfig::new(Arc::new(quic)), server.local_addr(), CENTRAL)
        .unwrap()
        .await
        .unwrap()
}

/// Whether `connection` gets closed by the server within a few seconds, and why.
async fn closed_reason(connection: &quinn::Connection) -> Option<String> {
    // The server decides after the handshake; a stream makes the client notice.
    let probe = async {
        let (mut send, mut recv) = connection.open_bi().await?;
        send.write_all(&[PROTOCOL_VERSION]).await?;
        recv.read_to_end(1024).await?;
        Ok::<_, anyhow::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(3), probe).await;
    connection.close_reason().map(|r| r.to_string())
}

#[tokio::test]
async fn a_certificate_acts_only_in_its_role() {
    let ca = new_ca("roles");
    let server = TierServer::bind(
        &ca.identity(CENTRAL, Role::Central, &ca).unwrap(),
        ServerConfig::new(loopback()),
        sum_handler,
    )
    .unwrap();
    // An edge and a relay may escalate; a central's certificate may not.
    for (role, allowed) in [(Role::Edge, true), (Role::Relay, true), (Role::Central, false)] {
        let edge = client(&ca.identity("node-a", role, &ca).unwrap(), server.local_addr(), CENTRAL);
        let result = send(&edge, &request(1, Duration::from_secs(3))).await;
        assert_eq!(matches!(result, Ok(Ok(_))), allowed, "{role}: {result:?}");
    }
    // And an edge's certificate cannot serve escalations: clients refuse it.
    let fake = TierServer::bind(
        &ca.identity(CENTRAL, Role::Edge, &ca).unwrap(),
        ServerConfig::new(loopback()),
        sum_handler,
    )
    .unwrap();
    let edge = client(&ca.identity("node-a", Role::Edge, &ca).unwrap(), fake.local_addr(), CENTRAL);
    let err = send(&edge, &request(1, Duration::from_secs(3))).await.unwrap_err();
    assert!(matches!(err, TransportError::Connect { .. }), "{err}");
}

#[tokio::test]
async fn only_allowlisted_names_may_escalate_and_a_reload_applies_to_open_connections() {
    let ca = new_ca("allowlist");
    let mut config = ServerConfig::new(loopback());
    config.allow = Allowlist::only(["edge-1", "pop-*"]);
    let identity = ca.identity(CENTRAL, Role::Central, &ca).unwrap();
    let server = TierServer::bind(&identity, config, sum_handler).unwrap();
    for (name, allowed) in [("edge-1", true), ("pop-ams", true), ("edge-2", false)] {
        let edge = client(&ca.identity(name, Role::Edge, &ca).unwrap(), server.local_addr(), CENTRAL);
        let result = send(&edge, &request(1, Duration::from_secs(3))).await;
        assert_eq!(matches!(result, Ok(Ok(_))), allowed, "{name}: {result:?}");
        if !allowed {
            let err = result.unwrap_err().to_string();
            assert!(err.contains("edge-2 is not on this node's listeners.quic_allow"), "{err}");
        }
    }

    // edge-1 is connected; once it is no longer allowed, its next escalation is refused.
    let edge = client(&ca.identity("edge-1", Role::Edge, &ca).unwrap(), server.local_addr(), CENTRAL);
    assert!(matches!(send(&edge, &request(2, Duration::from_secs(3))).await, Ok(Ok(_))));
    server.reconfigure(&identity, Allowlist::only(["pop-*"]), ProtocolLimits::default()).unwrap();
    let err = send(&edge, &request(3, Duration::from_secs(3))).await.unwrap_err().to_string();
    assert!(err.contains("no longer on this node's listeners.quic_allow"), "{err}");
}

#[tokio::test]
async fn a_peer_holds_at_most_its_connections_whatever_its_addresses() {
    let ca = new_ca("connections");
    let mut config = ServerConfig::new(loopback());
    config.max_connections_per_peer = 2;
    let server =
        TierServer::bind(&ca.identity(CENTRAL, Role::Central, &ca).unwrap(), config, sum_handler).unwrap();
    // Each raw connection comes from its own UDP port: the cap is by certificate name.
    let first = raw_connection(&ca, &server, "edge-1", Role::Edge).await;
    let second = raw_connection(&ca, &server, "edge-1", Role::Edge).await;
    let third = raw_connection(&ca, &server, "edge-1", Role::Edge).await;
    let reason = closed_reason(&third).await.expect("the third connection is closed");
    assert!(reason.contains("edge-1 already holds 2 connections"), "{reason}");
    assert!(first.close_reason().is_none() && second.close_reason().is_none());
    // Another edge is not affected, and a place freed is a place to take.
    let other = client(&ca.identity("edge-2", Role::Edge, &ca).unwrap(), server.local_addr(), CENTRAL);
    assert!(matches!(send(&other, &request(1, Duration::from_secs(3))).await, Ok(Ok(_))));
    first.close(0u32.into(), b"done");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = raw_connection(&ca, &server, "edge-1", Role::Edge).await;
    assert_eq!(closed_reason(&again).await, None);
}

/// A handler that notes when it starts and whether it was dropped before it finished.
#[derive(Clone, Default)]
struct Watched {
    started: Arc<AtomicUsize>,
    finished: Arc<AtomicUsize>,
    cancelled: Arc<AtomicUsize>,
}

struct DropGuard(Arc<AtomicUsize>, bool);

impl Drop for DropGuard {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Watched {
    /// Takes `work`, then answers.
    fn handler(
        &self,
        work: Duration,
    ) -> impl Fn(EscalationRequest, RequestContext) -> Boxed + Send + Sync + 'static {
        let w = self.clone();
        move |req, ctx| {
            let w = w.clone();
            Box::pin(async move {
                w.started.fetch_add(1, Ordering::SeqCst);
                let mut guard = DropGuard(w.cancelled.clone(), false);
                tokio::time::sleep(work).await;
                guard.1 = true;
                w.finished.fetch_add(1, Ordering::SeqCst);
                sum_handler(req, ctx).await
            })
        }
    }
}

/// The handler's future, boxed so that closures returning it have one type.
type Boxed = Pin<Box<dyn Future<Output = Result<EscalationAnswer, ErrorFrame>> + Send>>;

#[tokio::test]
async fn a_request_that_arrives_with_no_budget_is_refused_without_running() {
    let ca = new_ca("budget");
    let watched = Watched::default();
    let server = TierServer::bind(
        &ca.identity(CENTRAL, Role::Central, &ca).unwrap(),
        ServerConfig::new(loopback()),
        watched.handler(Duration::ZERO),
    )
    .unwrap();
    let connection = raw_connection(&ca, &server, "edge-1", Role::Edge).await;
    let (mut tx, mut rx) = connection.open_bi().await.unwrap();
    let frame = cascade_runtime::protocol::encode_request(
        &request(4, Duration::ZERO),
        Duration::ZERO,
        &ProtocolLimits::default(),
    )
    .unwrap();
    tx.write_all(&frame).await.unwrap();
    tx.finish().unwrap();
    let reply = rx.read_to_end(1 << 20).await.unwrap();
    let cascade_runtime::protocol::Frame::Error(e) =
        cascade_runtime::protocol::decode(&reply, &ProtocolLimits::default()).unwrap()
    else {
        panic!("expected an error frame")
    };
    assert_eq!((e.id, e.kind), (4, ErrorKind::DeadlineExceeded));
    assert_eq!(watched.started.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_upstream_stops_working_when_the_requester_gives_up() {
    let ca = new_ca("cancel");
    let watched = Watched::default();
    let server = TierServer::bind(
        &ca.identity(CENTRAL, Role::Central, &ca).unwrap(),
        ServerConfig::new(loopback()),
        watched.handler(Duration::from_secs(3)),
    )
    .unwrap();
    let edge = client(&ca.identity("edge-1", Role::Edge, &ca).unwrap(), server.local_addr(), CENTRAL);
    // The edge gives the upstream 10 s, but its own caller goes away after 200 ms.
    let request = request(1, Duration::from_secs(10));
    let gave_up = tokio::time::timeout(Duration::from_millis(200), send(&edge, &request)).await;
    assert!(gave_up.is_err());
    let waited = Instant::now();
    while watched.cancelled.load(Ordering::SeqCst) == 0 && waited.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(watched.started.load(Ordering::SeqCst), 1);
    assert_eq!(watched.cancelled.load(Ordering::SeqCst), 1, "the handler ran on for nobody");
    assert_eq!(watched.finished.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn shutdown_lets_escalations_in_flight_finish_and_refuses_new_ones() {
    let ca = new_ca("drain");
    let watched = Watched::default();
    let server = Arc::new(
        TierServer::bind(
            &ca.identity(CENTRAL, Role::Central, &ca).unwrap(),
            ServerConfig::new(loopback()),
            watched.handler(Duration::from_millis(500)),
        )
        .unwrap(),
    );
    let addr = server.local_addr();
    let edge = Arc::new(client(&ca.identity("edge-1", Role::Edge, &ca).unwrap(), addr, CENTRAL));
    let in_flight = tokio::spawn({
        let edge = edge.clone();
        async move { send(&edge, &request(1, Duration::from_secs(5))).await }
    });
    while watched.started.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let shutdown = tokio::spawn(async move { server.shutdown().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let late = client(&ca.identity("edge-2", Role::Edge, &ca).unwrap(), addr, CENTRAL);
    assert!(send(&late, &request(2, Duration::from_secs(1))).await.is_err(), "a new edge got in");
    let answer = in_flight.await.unwrap().unwrap();
    assert!(matches!(answer, Ok(ref a) if a.id == 1), "{answer:?}");
    tokio::time::timeout(Duration::from_secs(3), shutdown).await.expect("shutdown ended").unwrap();
    assert_eq!(watched.cancelled.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn one_peer_filling_its_read_budget_does_not_stall_another() {
    let ca = new_ca("read budget");
    let mut config = ServerConfig::new(loopback());
    config.limits = ProtocolLimits { max_frame_bytes: 256 << 10 };
    config.read_timeout = Duration::from_secs(20);
    // Room for 8 frames in all; one connection may hold 4 of them.
    config.max_buffered_bytes = 8 * (256 << 10);
    let server =
        TierServer::bind(&ca.identity(CENTRAL, Role::Central, &ca).unwrap(), config, sum_handler).unwrap();

    // A greedy edge opens many streams, each declaring a whole frame and sending most of it.
    let greedy = raw_connection(&ca, &server, "greedy", Role::Edge).await;
    let mut held = Vec::new();
    for _ in 0..32 {
        let Ok((mut tx, rx)) = greedy.open_bi().await else { break };
        let declared = 256u32 << 10;
        let mut partial = vec![PROTOCOL_VERSION];
        partial.extend_from_slice(&declared.to_be_bytes());
        partial.resize(200 << 10, 0);
        // Writes past the budget wait on flow control; don't wait for them here.
        held.push(tokio::spawn(async move {
            let _ = tx.write_all(&partial).await;
            (tx, rx)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Another edge is answered promptly all the same.
    let other = client(&ca.identity("edge-2", Role::Edge, &ca).unwrap(), server.local_addr(), CENTRAL);
    let started = Instant::now();
    let answer = send(&other, &request(9, Duration::from_secs(5))).await.unwrap();
    assert!(matches!(answer, Ok(ref a) if a.id == 9), "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "waited {:?}", started.elapsed());
    drop(held);
}
