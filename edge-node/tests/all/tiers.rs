//! Three tiers as three processes: a batching central node and two edge nodes, each an
//! `edge-node serve` child process with its own generated certificate, on loopback.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use cascade_runtime::ReferenceModel;
use cascade_runtime::config::BatchingConfig;
use cascade_runtime::reference::ReferenceNode;
use cascade_testkit::{
    assert_close, central, client, fixture, get_text, hard_images, image_body, metric, output_values, post,
    probabilities, write_config,
};
use edge_node::deployment::{NodeProcess, free_tcp_port, free_udp_port};
use serde_json::Value;

/// A node as an `edge-node serve` child process (killed on drop), and its HTTP address.
struct Running {
    node: NodeProcess,
    http: SocketAddr,
}

/// Starts `config` (written as `file`) on a free HTTP port, once it answers as ready.
async fn spawn(file: &str, mut config: ReferenceNode) -> Running {
    let port = free_tcp_port().unwrap();
    config.node.listeners.http = format!("127.0.0.1:{port}");
    let path = write_config(file, &config);
    let program = Path::new(env!("CARGO_BIN_EXE_edge-node"));
    let mut node = NodeProcess::start(program, file, &path, fixture().dir.path()).unwrap();
    node.wait_ready(&client(), port).await.unwrap();
    Running { node, http: format!("127.0.0.1:{port}").parse().unwrap() }
}

/// A central node that batches, listening for QUIC on `quic`.
fn batching_central(quic: SocketAddr) -> ReferenceNode {
    let mut node = central();
    node.node.listeners.quic = Some(quic.to_string());
    // Calibration turns batching off for the central model on a CPU (no batch saves a row
    // more than the handoff costs): these tests are about the batching path, so it is forced.
    node.node.batching = Some(BatchingConfig::new(16, 20_000, false));
    node
}

/// An edge named `name` that escalates everything below 0.9 to `central`, with a breaker
/// that probes again after `open_ms`, and an escalation budget that does not get in the way.
/// An escalation may take 1.5 s: these tests share two cores with the rest of the suite.
fn edge(name: &str, central: SocketAddr, open_ms: u64) -> ReferenceNode {
    let mut node = cascade_testkit::edge(0.9, Some(central));
    node.node.node.name = name.to_owned();
    if let Some(up) = node.node.upstream.as_mut() {
        up.breaker.open_ms = open_ms;
        up.request_timeout_ms = 1500;
    }
    node.node.modes.normal.escalation_budget_rps = Some(100_000.0);
    node
}

fn quic_port() -> SocketAddr {
    format!("127.0.0.1:{}", free_udp_port().unwrap()).parse().unwrap()
}

/// Image `i` as a request made unique by `nonce` (parameters are part of the cache key), so
/// that repeats are not answered from the edge's cache.
fn unique_body(i: usize, nonce: usize) -> Vec<u8> {
    let mut body = image_body(i);
    body["parameters"] = serde_json::json!({ "nonce": nonce.to_string() });
    serde_json::to_vec(&body).unwrap()
}

/// Two edges escalate at the same time to one central node, which answers them in shared
/// batches with the central model's output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_edges_share_a_batching_central() {
    let hard = hard_images(24, 0.85);
    let expected = probabilities(ReferenceModel::CentralFp32, &hard);
    let quic = quic_port();
    let central = spawn("tiers-central.toml", batching_central(quic)).await;
    let edges = [
        spawn("tiers-edge-a.toml", edge("edge-a", quic, 60_000)).await,
        spawn("tiers-edge-b.toml", edge("edge-b", quic, 60_000)).await,
    ];
    let c = client();
    let requests: Vec<_> = hard
        .iter()
        .enumerate()
        .map(|(n, &i)| {
            let (c, addr) = (c.clone(), edges[n % 2].http);
            let body = serde_json::to_vec(&image_body(i)).unwrap();
            tokio::spawn(async move { post(&c, addr, "digits", &body).await })
        })
        .collect();
    for (n, r) in requests.into_iter().enumerate() {
        let r = r.await.unwrap();
        assert_eq!(r.status, 200, "request {n}: {}", r.body);
        let p = &r.body["parameters"];
        assert_eq!(
            (&p["tier"], &p["escalated"], &p["degraded"]),
            (&"central".into(), &true.into(), &false.into()),
            "request {n}: {}",
            r.body
        );
        assert_close(&output_values(&r.body), &expected[n]);
    }
    let (_, metrics) = get_text(&c, central.http, "/metrics").await;
    let rows = metric(&metrics, "cascade_batch_rows_sum", &[]).unwrap();
    let batches = metric(&metrics, "cascade_batch_rows_count", &[]).unwrap();
    assert_eq!(rows, 24.0, "every escalation's model call goes through the batcher:\n{metrics}");
    assert!(batches < rows, "24 concurrent escalations never shared a batch:\n{metrics}");
    for name in ["edge-a", "edge-b"] {
        let edge = &edges[usize::from(name == "edge-b")];
        let (_, m) = get_text(&c, edge.http, "/metrics").await;
        assert_eq!(metric(&m, "cascade_escalations_total{", &["result=\"ok\""]), Some(12.0), "{name}: {m}");
    }
}

/// The central process is killed and restarted on the same address under load from two
/// edges: no request is lost (answered locally, marked degraded, while it is down), and
/// escalations resume once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_and_restarting_the_central_loses_no_request() {
    let hard = hard_images(8, 0.85);
    let quic = quic_port();
    let mut central = spawn("restart-central.toml", batching_central(quic)).await;
    let edges = [
        spawn("restart-edge-a.toml", edge("edge-a", quic, 200)).await,
        spawn("restart-edge-b.toml", edge("edge-b", quic, 200)).await,
    ];
    let c = client();
    // Phases: up, down, up again. Each worker sends requests back to back.
    let phase = |index: usize, central_up: bool| {
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let (c, addr, hard) = (c.clone(), edges[w % 2].http, hard.clone());
                tokio::spawn(async move {
                    let mut replies = Vec::new();
                    let until = Instant::now() + Duration::from_millis(700);
                    let mut n = 0;
                    while Instant::now() < until {
                        let body = unique_body(hard[n % hard.len()], (index * 10 + w) * 1_000_000 + n);
                        replies.push(post(&c, addr, "digits", &body).await);
                        n += 1;
                    }
                    replies
                })
            })
            .collect();
        async move {
            let mut all = Vec::new();
            for w in workers {
                all.extend(w.await.unwrap());
            }
            (central_up, all)
        }
    };
    let mut phases = vec![phase(0, true).await];
    central.node.kill();
    phases.push(phase(1, false).await);
    let _restarted = spawn("restart-central-again.toml", batching_central(quic)).await;
    // The edges find the new process once their breakers probe and their reconnect
    // backoff (which grew while it was down, up to 5 s) has run out. Every request sent
    // meanwhile is answered too.
    let recovering = Instant::now();
    for edge in &edges {
        let mut n = 0;
        loop {
            let r = post(&c, edge.http, "digits", &unique_body(hard[n % hard.len()], 90_000_000 + n)).await;
            assert_eq!(r.status, 200, "while recovering: {}", r.body);
            if r.body["parameters"]["escalated"] == true {
                break;
            }
            assert!(recovering.elapsed() < Duration::from_secs(15), "no escalation 15 s after the restart");
            tokio::time::sleep(Duration::from_millis(50)).await;
            n += 1;
        }
    }
    phases.push(phase(2, true).await);

    let field = |r: &Value, k: &str| r["parameters"][k].clone();
    for (p, (up, replies)) in phases.iter().enumerate() {
        assert!(!replies.is_empty());
        for r in replies {
            assert_eq!(r.status, 200, "phase {p}: a request was lost: {}", r.body);
            if !up {
                assert_eq!(field(&r.body, "degraded"), true, "phase {p}: {}", r.body);
                assert_ne!(field(&r.body, "tier"), "central", "phase {p}: {}", r.body);
            }
        }
        let escalated = replies.iter().filter(|r| field(&r.body, "escalated") == true).count();
        if *up {
            assert!(
                escalated > replies.len() / 2,
                "phase {p}: only {escalated} of {} escalated",
                replies.len()
            );
        } else {
            assert_eq!(escalated, 0, "phase {p}: escalated while the central node was down");
        }
    }
}
