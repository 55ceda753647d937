//! `cascade-bench tiers`: what escalating costs, what batching buys the central tier, and
//! what an edge does when the central tier dies.
//!
//! - **Escalation overhead.** A [`TierServer`] and a [`TierClient`] talk over QUIC with
//!   mutual TLS on loopback, each on its own thread and tokio runtime (as two nodes would
//!   be). The server's handler answers at once with ten logits and reports its own time in
//!   the answer's timings; each sample is the client's round trip minus that time: framing,
//!   encryption, the two QUIC stacks and the loopback network. One request at a time:
//!   latency, not throughput. Figures `tiers.escalation_overhead_us.p50` / `.p99`.
//! - **Central batching.** Central nodes run as `edge-node serve` processes with the
//!   central model and the mnist-classifier plugin, one with `[batching]` forced on and one without
//!   (cache off, so every escalation runs the model). This process drives each in turn
//!   with 64 escalations always in flight over one mutual-TLS QUIC connection, alternating
//!   rounds so both see the same machine. Figures `tiers.central.batched_rps`,
//!   `tiers.central.unbatched_rps` (medians over rounds) and their ratio
//!   `tiers.central.batching_speedup`. A third central node runs the default,
//!   `calibrate = true`, which batches a model only up to a size measured at load to pay
//!   for itself: `tiers.central.calibrated_rps` and `tiers.central.calibrated_speedup`.
//! - **Central down.** A central and an edge process; HTTP clients send the test split to
//!   the edge (threshold 0.9, about 6% escalated) while the central process is killed
//!   halfway. Figures `tiers.edge_rps_when_central_down` (answered per second after the
//!   kill) and `tiers.failed_requests_when_central_down` (non-200 answers over the run).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use cascade_runtime::protocol::{ErrorFrame, EscalationAnswer, EscalationRequest, NamedTensor, StageTiming};
use cascade_runtime::transport::{
    ClientConfig, RequestContext, ServerConfig, TierClient, TierServer, TlsIdentity,
};
use cascade_runtime::{Digits, ReferenceModel, Split, Tensor};

use cascade_runtime::config::BatchingConfig;
use cascade_runtime::reference::ReferenceNode;
use cascade_runtime::transport::certs::Role;
use edge_node::deployment::{CENTRAL, Certs, NodeProcess, free_tcp_port, free_udp_port, write_config};
use edge_node::figures::{Figures, median, percentile};

/// Escalations kept in flight against a central node.
const CONCURRENT_ESCALATIONS: usize = 64;

/// Runs the suite on the reference models and plugin, the central model on
/// `central_backend` (`tract` or `wgpu`); `quick` takes fewer samples.
pub(crate) fn run(
    models_dir: &Path,
    plugin_crate: &Path,
    central_backend: &str,
    quick: bool,
) -> Result<Figures> {
    let dir = tempfile::Builder::new().prefix("cascade-bench-tiers-").tempdir()?;
    let certs = Certs::issue(
        &dir.path().join("certs"),
        &[(CENTRAL, Role::Central), ("edge", Role::Edge), ("bench-client", Role::Edge)],
    )?;
    let mut figures = Figures::default();
    let (p50, p99) = escalation_overhead(quick, &certs)?;
    figures.push("tiers.escalation_overhead_us.p50", p50, "us");
    figures.push("tiers.escalation_overhead_us.p99", p99, "us");

    let test = Digits::load_split(models_dir, Split::Test)
        .with_context(|| format!("loading the test split from {}", models_dir.display()))?;
    let plugin = dir.path().join("mnist_classifier.wasm");
    edge_node::plugin_cmd::build(plugin_crate, &plugin, None)?;
    let program = crate::node_program()?;
    let deployment =
        Deployment { dir: dir.path(), certs: &certs, plugin: &plugin, models_dir, central_backend, program };
    eprintln!("tiers: the central model runs on {central_backend}");

    let [batched, unbatched, calibrated] = central_batching(&deployment, &test, quick)?;
    figures.push("tiers.central.batched_rps", batched, "items_per_s");
    figures.push("tiers.central.unbatched_rps", unbatched, "items_per_s");
    figures.push("tiers.central.batching_speedup", batched / unbatched.max(f64::MIN_POSITIVE), "ratio");
    figures.push("tiers.central.calibrated_rps", calibrated, "items_per_s");
    figures.push("tiers.central.calibrated_speedup", calibrated / unbatched.max(f64::MIN_POSITIVE), "ratio");

    let (rps, failed) = central_down(&deployment, &test, quick)?;
    figures.push("tiers.edge_rps_when_central_down", rps, "items_per_s");
    figures.push("tiers.failed_requests_when_central_down", failed as f64, "count");
    Ok(figures)
}

/// How a central node batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Batching {
    /// No `[batching]`.
    Off,
    /// Up to 32 rows, whatever the model's cost per row (`calibrate = false`).
    Forced,
    /// Up to a batch size measured to pay for itself at load (the default).
    Calibrated,
}

/// Where the bench's nodes get their files.
struct Deployment<'a> {
    dir: &'a Path,
    certs: &'a Certs,
    plugin: &'a Path,
    models_dir: &'a Path,
    central_backend: &'a str,
    /// The `edge-node` binary.
    program: std::path::PathBuf,
}

impl Deployment<'_> {
    /// A central node config on fresh loopback ports, and its HTTP and QUIC ports.
    fn central(&self, name: &str, batching: Batching) -> Result<(u16, u16)> {
        let (http, quic) = (free_tcp_port()?, free_udp_port()?);
        let mut node =
            ReferenceNode::new(CENTRAL, &ReferenceModel::CentralFp32.path(self.models_dir), self.plugin);
        node.model.backend = self.central_backend.to_owned();
        node.model.fallback_to_tract = false;
        node.node.listeners.http = format!("127.0.0.1:{http}");
        self.certs.listen_quic(&mut node, &format!("127.0.0.1:{quic}"));
        node.route.max_in_flight = CONCURRENT_ESCALATIONS as u32;
        // 64 escalations queue for one device: give each the route's whole deadline.
        node.plugin.deadline_ms = 1900;
        node.route.cache_ttl_s = 0;
        node.node.modes.switching.automatic = false;
        node.node.batching = match batching {
            Batching::Off => None,
            Batching::Forced => Some(BatchingConfig::new(32, 2000, false)),
            Batching::Calibrated => Some(BatchingConfig::new(32, 2000, true)),
        };
        // One file per process; the certificate stays `central`'s.
        let path = self.dir.join(format!("{name}.toml"));
        node.config().write(&path)?;
        Ok((http, quic))
    }
}

/// The escalation overhead's p50 and p99, in µs.
fn escalation_overhead(quick: bool, certs: &Certs) -> Result<(f64, f64)> {
    let (warmup, samples) = if quick { (200, 1_000) } else { (1_000, 10_000) };
    let (server_id, client_id) = identities(certs)?;

    // The server lives on its own thread and runtime until the client is done.
    let (addr_tx, addr_rx) = mpsc::channel::<Result<SocketAddr>>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server_thread = std::thread::spawn(move || -> Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async move {
            let listen: SocketAddr = "127.0.0.1:0".parse()?;
            match TierServer::bind(&server_id, ServerConfig::new(listen), answer_at_once) {
                Ok(server) => {
                    let _ = addr_tx.send(Ok(server.local_addr()));
                    let _ = stop_rx.await;
                    server.shutdown().await;
                }
                Err(e) => {
                    let _ = addr_tx.send(Err(e.into()));
                }
            }
            Ok(())
        })
    });
    let addr = addr_rx.recv().context("bench server thread died")??;

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let overheads = runtime.block_on(async {
        let client = TierClient::new(&client_id, ClientConfig::new(addr, CENTRAL))?;
        let pixels: Vec<f32> = (0..784).map(|i| (i % 256) as f32 / 255.0).collect();
        let input = Tensor::from_f32(vec![1, 1, 28, 28], &pixels)?;
        let mut overheads = Vec::with_capacity(samples);
        for i in 0..warmup + samples {
            let request = EscalationRequest {
                id: i as u64,
                route: "digits".into(),
                inputs: vec![NamedTensor { name: "input".into(), tensor: input.clone() }],
                budget_us: 0, // the client writes the time left as it sends
                trace: None,
                node_id: "bench-edge".into(),
                local_confidence: Some(0.5),
            };
            let started = Instant::now();
            let reply = client.request(&request, Instant::now() + Duration::from_secs(5)).await?;
            let round_trip = started.elapsed();
            let answer = reply.map_err(|e| anyhow!("bench server refused: {e:?}"))?;
            let handler_us = answer.timings.first().map_or(0, |t| t.micros);
            if i >= warmup {
                overheads.push(round_trip.as_secs_f64() * 1e6 - handler_us as f64);
            }
        }
        client.close().await;
        Ok::<_, anyhow::Error>(overheads)
    });
    let _ = stop_tx.send(());
    server_thread.join().map_err(|_| anyhow!("bench server thread panicked"))??;
    let mut overheads = overheads?;
    eprintln!("tiers: {} sequential escalations on loopback", overheads.len());
    Ok((percentile(&mut overheads, 0.5), percentile(&mut overheads, 0.99)))
}

/// Answers with ten logits at once, and says how long that took.
async fn answer_at_once(
    request: EscalationRequest,
    _ctx: RequestContext,
) -> Result<EscalationAnswer, ErrorFrame> {
    let started = Instant::now();
    let logits = [0.0f32, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 9.0, 0.0, 0.0];
    let outputs = Tensor::from_f32(vec![1, 10], &logits)
        .map(|tensor| vec![NamedTensor { name: "logits".into(), tensor }])
        .unwrap_or_default();
    let handler_us = started.elapsed().as_micros() as u64;
    Ok(EscalationAnswer {
        id: request.id,
        outputs,
        confidence: 0.99,
        label: Some(7),
        model_version: "bench".into(),
        timings: vec![StageTiming { stage: "handler".into(), micros: handler_us }],
    })
}

/// The central node's identity and the bench client's, from `certs`.
fn identities(certs: &Certs) -> Result<(TlsIdentity, TlsIdentity)> {
    let of = |name: &str| {
        let dir = &certs.0;
        TlsIdentity::from_files(
            &dir.join(format!("{name}.pem")),
            &dir.join(format!("{name}.key")),
            &dir.join("ca.pem"),
        )
    };
    Ok((of(CENTRAL)?, of("bench-client")?))
}

/// Medians over alternating rounds of the answered escalations per second of a central node
/// batching (forced), not batching, and batching as calibrated at load.
fn central_batching(d: &Deployment<'_>, test: &Digits, quick: bool) -> Result<[f64; 3]> {
    let (rounds, window) = if quick { (1, Duration::from_secs(2)) } else { (3, Duration::from_secs(5)) };
    let runtime = tokio::runtime::Runtime::new()?;
    let identity = TlsIdentity::from_files(
        &d.certs.0.join("bench-client.pem"),
        &d.certs.0.join("bench-client.key"),
        &d.certs.0.join("ca.pem"),
    )?;
    runtime.block_on(async {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        let mut targets = Vec::new();
        let kinds = [
            ("central-batched", Batching::Forced),
            ("central-unbatched", Batching::Off),
            ("central-calibrated", Batching::Calibrated),
        ];
        for (name, batching) in kinds {
            let (http_port, quic) = d.central(name, batching)?;
            let mut node = NodeProcess::start(&d.program, name, &d.dir.join(format!("{name}.toml")), d.dir)?;
            node.wait_ready(&http, http_port).await?;
            let addr: SocketAddr = format!("127.0.0.1:{quic}").parse()?;
            let client = Arc::new(TierClient::new(&identity, ClientConfig::new(addr, CENTRAL))?);
            targets.push((name, node, client));
        }
        let mut rates = [Vec::new(), Vec::new(), Vec::new()];
        for round in 0..rounds {
            for (k, (name, node, client)) in targets.iter().enumerate() {
                let rps = drive_central(client.clone(), test, window).await.with_context(|| {
                    format!("driving the {name} node; its log ends:\n{}", node.log_tail())
                })?;
                eprintln!("tiers: round {round}: {name} answered {rps:.0} escalations/s");
                rates[k].push(rps);
            }
        }
        for (_, _, client) in &targets {
            client.close().await;
        }
        Ok(rates.map(|mut r| median(&mut r)))
    })
}

/// Keeps [`CONCURRENT_ESCALATIONS`] escalations of test images in flight for `window` (after
/// a short warm-up) and returns the answered rate. Any refusal or error fails the bench:
/// a throughput bought with dropped requests is no throughput.
async fn drive_central(client: Arc<TierClient>, test: &Digits, window: Duration) -> Result<f64> {
    let warmup = Duration::from_millis(500);
    let images: Arc<Vec<Tensor>> = Arc::new(
        (0..test.len())
            .map(|i| Tensor::from_u8(vec![28, 28], test.image(i).to_vec()))
            .collect::<Result<_, _>>()?,
    );
    let start = Instant::now();
    let (counting_from, until) = (start + warmup, start + warmup + window);
    let answered = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..CONCURRENT_ESCALATIONS {
        let (client, images, answered, next) =
            (client.clone(), images.clone(), answered.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            while Instant::now() < until {
                let id = next.fetch_add(1, Ordering::Relaxed);
                let request = EscalationRequest {
                    id,
                    route: "digits".into(),
                    inputs: vec![NamedTensor {
                        name: "image".into(),
                        tensor: images[id as usize % images.len()].clone(),
                    }],
                    budget_us: 0, // the client writes the time left as it sends
                    trace: None,
                    node_id: "bench-client".into(),
                    local_confidence: Some(0.5),
                };
                match client.request(&request, Instant::now() + Duration::from_secs(5)).await? {
                    Ok(_) => {
                        let now = Instant::now();
                        if now >= counting_from && now < until {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => bail!("the central node refused an escalation: {e:?}"),
                }
            }
            Ok(())
        }));
    }
    for w in workers {
        w.await??;
    }
    Ok(answered.load(Ordering::Relaxed) as f64 / window.as_secs_f64())
}

/// The edge's answered rate after the central process is killed, and the requests that got
/// no answer over the whole run.
fn central_down(d: &Deployment<'_>, test: &Digits, quick: bool) -> Result<(f64, u64)> {
    let half = if quick { Duration::from_secs(2) } else { Duration::from_secs(5) };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        let (central_http, quic) = d.central("central-down", Batching::Calibrated)?;
        let mut central = NodeProcess::start(&d.program, "central-down", &d.dir.join("central-down.toml"), d.dir)?;
        central.wait_ready(&http, central_http).await?;
        let edge_http = free_tcp_port()?;
        let mut edge = ReferenceNode::new("edge", &ReferenceModel::EdgeInt8.path(d.models_dir), d.plugin);
        edge.node.listeners.http = format!("127.0.0.1:{edge_http}");
        edge.route.thresholds.normal = 0.9;
        edge.route.cache_ttl_s = 0;
        d.certs.upstream_quic(&mut edge, &format!("127.0.0.1:{quic}"));
        if let Some(up) = edge.node.upstream.as_mut() {
            up.request_timeout_ms = 500;
        }
        edge.node.modes.normal.escalation_budget_rps = Some(100_000.0);
        edge.node.modes.switching.automatic = false;
        let edge_config = write_config(&edge, d.dir)?;
        let mut edge = NodeProcess::start(&d.program, "edge", &edge_config, d.dir)?;
        edge.wait_ready(&http, edge_http).await?;

        let url = Arc::new(format!("http://127.0.0.1:{edge_http}/v2/models/digits/infer"));
        let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
            (0..test.len())
                .map(|i| {
                    serde_json::to_vec(&serde_json::json!({
                        "inputs": [{"name": "image", "shape": [28, 28], "datatype": "UINT8", "data": test.image(i)}]
                    }))
                })
                .collect::<Result<_, _>>()?,
        );
        let killed = Arc::new(AtomicBool::new(false));
        let stop = Instant::now() + 2 * half;
        let mut workers = Vec::new();
        for w in 0..8usize {
            let (http, url, bodies, killed) = (http.clone(), url.clone(), bodies.clone(), killed.clone());
            workers.push(tokio::spawn(async move {
                let (mut after_kill, mut degraded, mut failed) = (0u64, 0u64, 0u64);
                let mut i = w;
                while Instant::now() < stop {
                    let body = bodies[i % bodies.len()].clone();
                    i += 8;
                    let down = killed.load(Ordering::Relaxed);
                    match http.post(url.as_str()).header("content-type", "application/json").body(body).send().await
                    {
                        Ok(r) if r.status().is_success() => {
                            let json: serde_json::Value = r.json().await.unwrap_or_default();
                            if down {
                                after_kill += 1;
                                degraded += u64::from(json["parameters"]["degraded"] == true);
                            }
                        }
                        _ => failed += 1,
                    }
                }
                (after_kill, degraded, failed)
            }));
        }
        tokio::time::sleep(half).await;
        central.kill();
        let killed_at = Instant::now();
        killed.store(true, Ordering::Relaxed);
        let (mut answered, mut degraded, mut failed) = (0, 0, 0);
        for w in workers {
            let (a, dg, f) = w.await?;
            answered += a;
            degraded += dg;
            failed += f;
        }
        let down_for = killed_at.elapsed().as_secs_f64();
        eprintln!(
            "tiers: central killed; the edge then answered {answered} requests in {down_for:.1} s \
             ({degraded} marked degraded), {failed} requests failed over the run"
        );
        Ok((answered as f64 / down_for, failed))
    })
}
