//! `cascade-bench edge`: a whole edge node over HTTP, under open-loop load.
//!
//! Starts a node as an `edge-node serve` process (no upstream) with the reference `edge_int8`
//! model and the `examples/mnist-classifier` plugin, threshold 0 so every request is answered locally, and
//! `cache_ttl_s = 0` so the cache never answers (the inputs also cycle through 2000 distinct
//! test images, so no two identical requests are in flight together and none coalesce).
//!
//! The load generator ([`crate::loadgen`]) is open-loop: request `k` is released at
//! `t0 + k / rate` whatever the earlier ones are doing, and each latency runs from that
//! scheduled time to the last byte of the answer, so queueing shows up instead of slowing the
//! sender down (coordinated omission). Requests are encoded once and written as bytes over
//! [`CONNECTIONS`] keep-alive connections on loopback, so the generator takes as little of the
//! machine as it can from the server it measures.
//!
//! Figures, for locally answered requests:
//! - `edge.local.p50_us`, `edge.local.p99_us`: at the moderate rate ([`MODERATE_RPS`]);
//! - `edge.local.max_rps`: the highest rung of the rate ladder with p99 under 5 ms and no
//!   error (a rung above the moderate rate that fails is run again, and the ladder stops at
//!   the first that fails twice running);
//! - `edge.overhead_us.p50`: one request at a time over HTTP minus the same request handed
//!   straight to an in-process sandbox holding the same plugin and model, alternated in the
//!   same run; the difference of the medians is what HTTP, admission, cache and policy add;
//!   `edge.binary.overhead_us.p50` is the same with the image as binary tensor data (the
//!   extension KServe's clients use by default) instead of 784 JSON numbers;
//! - with the peer (`tools/kserve_peer.py`: onnxruntime, one thread, behind starlette on
//!   uvicorn, same KServe v2 JSON) driven by the same generator and ladder:
//!   `edge.peer.p50_us`, `edge.peer.p99_us`, `edge.peer.max_rps` and
//!   `edge.speedup_vs_python_ort.max_rps` (ours / peer);
//! - CPU time per request, both servers at the same rate, from each process's user + system
//!   time in `/proc` (Linux): `edge.local.cpu_us_per_request`, `edge.peer.cpu_us_per_request`
//!   and `edge.ratio_ours_over_python_ort.cpu_us_per_request`, at `edge.cpu_rate_rps`:
//!   [`CPU_RPS`] when both servers pass that rung, otherwise the highest rung both pass
//!   (CPU per request falls as the rate rises, so only equal rates compare); beside them
//!   `edge.local.context_switches_per_request` and `edge.peer.context_switches_per_request`,
//!   voluntary and involuntary, summed over each process's threads from
//!   `/proc/{pid}/task/*/status` at the same rate (a thread that exits during a rung takes its
//!   count with it, so these are floors).
//!   Unlike `max_rps`, this does not depend on how many cores each server gets to use.
//! - what no request can cost less than, at `edge.cpu_rate_rps`, for each server:
//!   `edge.local.http_floor_cpu_us_per_request` and `edge.peer.http_floor_cpu_us_per_request`,
//!   CPU per `GET /v2/health/ready` (constant reply, no body, no model: accepting, parsing and
//!   answering HTTP over loopback TCP), and the inference figure less it,
//!   `edge.{local,peer}.cpu_us_per_request_beyond_http_floor`, with the floor rung's
//!   `edge.{local,peer}.http_floor_context_switches_per_request`; and
//!   `edge.local.binary.cpu_us_per_request`, the node's inference with the image as binary
//!   tensor data, which KServe's own clients send (the peer reads JSON only).
//!
//! The generator runs in this process and shares the machine's cores with the server under
//! test, so on a small machine both max rates are partly the generator's limit; and the
//! overhead figure includes the client's own share of each round trip (a blocking socket
//! write and read, the loopback TCP stack), not only the node's. `edge.http_floor_us.p50`
//! measures that share with an empty `GET /v2/health/live`.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cascade_runtime::reference::ReferenceNode;
use cascade_runtime::{Digits, ReferenceModel, Split};
use serde_json::json;

use crate::loadgen::{self, Conn, Load};
use crate::procfs;
use edge_node::deployment::{NodeProcess, free_tcp_port, write_config};
use edge_node::figures::{Figures, median, percentile};

/// The rate at which the latency figures are taken: well under either server's limit.
pub(crate) const MODERATE_RPS: f64 = 500.0;

/// The rates tried, in requests per second: steps of at most 25% from 2,000 rps up, where
/// both servers reach their limits, so `max_rps` is not off by a coarse step.
const LADDER: [f64; 25] = [
    250.0, 500.0, 1000.0, 1500.0, 2000.0, 2500.0, 3000.0, 3500.0, 4000.0, 5000.0, 6000.0, 7000.0, 8000.0,
    9000.0, 10000.0, 11000.0, 12000.0, 14000.0, 16000.0, 18000.0, 20000.0, 22000.0, 25000.0, 28000.0,
    32000.0,
];

/// The rate at which both servers' CPU time per request is taken when both pass it.
pub(crate) const CPU_RPS: f64 = 5000.0;

/// A rung passes with p99 under this.
const P99_LIMIT_US: f64 = 5000.0;

/// Distinct request bodies, cycled.
const BODIES: usize = 2000;

/// How long each client request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Keep-alive connections the generator drives each server over: the most requests it has
/// in flight at once (at 16,000 rps and 1 ms each, 16 are).
const CONNECTIONS: usize = 32;

/// The inference path on both servers.
const INFER_PATH: &str = "/v2/models/digits/infer";

/// The path of the floor figures: both servers answer it with a constant and no work.
const HEALTH_PATH: &str = "/v2/health/ready";

/// What one rung of the ladder measured.
struct Rung {
    rate: f64,
    latencies_us: Vec<f64>,
    errors: usize,
    /// The server process's CPU time over the rung, where `/proc` tells.
    cpu: Option<Duration>,
    /// The server's context switches over the rung, where `/proc` tells.
    switches: Option<u64>,
}

impl Rung {
    fn p(&mut self, q: f64) -> f64 {
        percentile(&mut self.latencies_us, q)
    }

    fn passes(&mut self) -> bool {
        self.errors == 0 && !self.latencies_us.is_empty() && self.p(0.99) < P99_LIMIT_US
    }
}

/// The ladder's results for one server.
struct Ladder {
    moderate: Option<Rung>,
    max_rps: f64,
    top_passed: bool,
    /// CPU time per answered request, in microseconds, at each rate passed: `(rate, us)`.
    cpu_us_per_request: Vec<(f64, f64)>,
    /// Context switches per answered request at each rate passed: `(rate, switches)`.
    switches_per_request: Vec<(f64, f64)>,
}

impl Ladder {
    fn cpu_at(&self, rate: f64) -> Option<f64> {
        self.cpu_us_per_request.iter().find(|(r, _)| *r == rate).map(|(_, us)| *us)
    }

    fn switches_at(&self, rate: f64) -> Option<f64> {
        self.switches_per_request.iter().find(|(r, _)| *r == rate).map(|(_, n)| *n)
    }

    /// The rate to compare CPU per request at: [`CPU_RPS`] if both ladders have it, else the
    /// highest rate both have (`other` absent: this ladder's own).
    fn cpu_rate(&self, other: Option<&Ladder>) -> Option<f64> {
        let shared: Vec<f64> = self
            .cpu_us_per_request
            .iter()
            .map(|(r, _)| *r)
            .filter(|r| other.is_none_or(|o| o.cpu_at(*r).is_some()))
            .collect();
        if shared.contains(&CPU_RPS) { Some(CPU_RPS) } else { shared.into_iter().reduce(f64::max) }
    }
}

/// One server under test, as the generator sees it.
struct Target<'a> {
    name: &'a str,
    addr: SocketAddr,
    /// The server's process id.
    pid: u32,
    /// Every request body, encoded for this server.
    requests: Arc<Vec<Vec<u8>>>,
    /// Whether a reply body counts: for our node, it must say it was answered here and
    /// computed (not from the cache).
    accept: fn(&[u8]) -> bool,
}

impl<'a> Target<'a> {
    fn new(
        name: &'a str,
        addr: SocketAddr,
        pid: u32,
        bodies: &[Vec<u8>],
        accept: fn(&[u8]) -> bool,
    ) -> Target<'a> {
        let requests = bodies.iter().map(|b| loadgen::post_json(addr, INFER_PATH, b)).collect();
        Target { name, addr, pid, requests: Arc::new(requests), accept }
    }

    /// The same server, sent `requests` instead, its replies judged the same way.
    fn with_requests(&self, requests: Vec<Vec<u8>>) -> Target<'a> {
        Target { requests: Arc::new(requests), ..*self }
    }

    /// The same server asked only `GET /v2/health/ready`: no body to parse, no model, a
    /// constant reply. What each request costs this server's process then is its HTTP floor.
    fn health(&self) -> Target<'a> {
        Target { accept: |_| true, ..self.with_requests(vec![loadgen::get(self.addr, HEALTH_PATH)]) }
    }
}

/// Our node's replies count when answered locally and computed, not cached.
fn answered_locally(body: &[u8]) -> bool {
    contains(body, b"\"escalated\":false") && contains(body, b"\"cache\":\"miss\"")
}

/// Runs the suite. `repo` holds `tools/kserve_peer.py` and `target/peer-venv`.
pub(crate) fn run(
    models_dir: &Path,
    plugin_crate: &Path,
    repo: &Path,
    quick: bool,
) -> anyhow::Result<Figures> {
    let step = if quick { Duration::from_millis(1000) } else { Duration::from_secs(4) };
    let overhead_samples = if quick { 300 } else { 2000 };
    let test = Digits::load_split(models_dir, Split::Test)
        .with_context(|| format!("loading the test split from {}", models_dir.display()))?;
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let wasm = dir.path().join("mnist-classifier.wasm");
    edge_node::plugin_cmd::build(plugin_crate, &wasm, None)?;
    let model = ReferenceModel::EdgeInt8.path(models_dir);
    let port = free_tcp_port()?;
    let mut node = node_config(&model, &wasm);
    node.node.listeners.http = format!("127.0.0.1:{port}");
    let config_file = write_config(&node, dir.path())?;

    let bodies = (0..BODIES.min(test.len()))
        .map(|i| {
            let body = json!({
                "id": format!("img-{i}"),
                "inputs": [{ "name": "image", "shape": [28, 28], "datatype": "UINT8", "data": test.image(i) }]
            });
            serde_json::to_vec(&body).context("encoding a request body")
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    // The node runs as its own process, as the peer does, so that each one's CPU time is
    // its own and the generator's threads are in neither.
    let mut node = NodeProcess::start(&crate::node_program()?, "bench-edge", &config_file, dir.path())?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    if let Err(e) = wait_ready(addr, "edge node", || node.exited()) {
        bail!("{e:#}; its log ends:\n{}", node.log_tail());
    }
    let ours = Target::new("edge node", addr, node.id(), &bodies, answered_locally);
    let (status, body) =
        Conn::connect(ours.addr)?.round_trip(&ours.requests[0]).map(|(s, b)| (s, b.to_vec()))?;
    if status != 200 || !answered_locally(&body) {
        bail!("the node did not answer locally: {status} {}", String::from_utf8_lossy(&body));
    }

    let mut figures = Figures::default();
    let overhead = measure_overhead(&ours, &test, &model, &wasm, overhead_samples)?;
    figures.push("edge.overhead_us.p50", overhead.http - overhead.direct, "us");
    figures.push("edge.http_sequential_us.p50", overhead.http, "us");
    figures.push("edge.sandbox_direct_us.p50", overhead.direct, "us");
    figures.push("edge.http_floor_us.p50", overhead.floor, "us");
    figures.push(
        "edge.overhead_beyond_http_floor_us.p50",
        overhead.http - overhead.direct - overhead.floor,
        "us",
    );
    figures.push("edge.binary.overhead_us.p50", overhead.http_binary - overhead.direct, "us");

    let mut ladder = drive_ladder(&ours, step)?;
    if let Some(m) = ladder.moderate.as_mut() {
        figures.push("edge.local.p50_us", m.p(0.5), "us");
        figures.push("edge.local.p99_us", m.p(0.99), "us");
    }
    figures.push("edge.local.max_rps", ladder.max_rps, "items_per_s");
    if ladder.top_passed {
        eprintln!("note: the node passed the ladder's top rung; edge.local.max_rps is a lower bound");
    }
    let binary = ours.with_requests(binary_requests(addr, &test, bodies.len())?);

    // The node stays up, idle, while the peer climbs its ladder: the floors below are taken
    // at the rate the two are compared at, known only once both ladders are done.
    let peer = peer_figures(repo, &model, &bodies, step, &ladder, &mut figures).unwrap_or_else(|e| {
        eprintln!("no python peer figures: {e:#}. Printing our figures only.");
        None
    });
    let their_ladder = peer.as_ref().map(|p| &p.ladder);
    match ladder.cpu_rate(their_ladder) {
        Some(rate) => {
            figures.push("edge.cpu_rate_rps", rate, "items_per_s");
            let ours_us = ladder.cpu_at(rate).unwrap_or_default();
            figures.push("edge.local.cpu_us_per_request", ours_us, "us");
            let theirs_us = their_ladder.and_then(|p| p.cpu_at(rate));
            if let Some(theirs_us) = theirs_us {
                figures.push("edge.peer.cpu_us_per_request", theirs_us, "us");
                figures.push(
                    "edge.ratio_ours_over_python_ort.cpu_us_per_request",
                    ours_us / theirs_us,
                    "ratio",
                );
            }
            if let Some(switches) = ladder.switches_at(rate) {
                figures.push("edge.local.context_switches_per_request", switches, "count");
            }
            if let Some(switches) = their_ladder.and_then(|p| p.switches_at(rate)) {
                figures.push("edge.peer.context_switches_per_request", switches, "count");
            }
            // Each server alone on the machine while its own floor is measured.
            let their_floor = peer.as_ref().and_then(|p| cpu_per_request_at(&p.target.health(), rate, step));
            drop(peer);
            let our_floor = cpu_per_request_at(&ours.health(), rate, step);
            if let Some(binary) = cpu_per_request_at(&binary, rate, step) {
                figures.push("edge.local.binary.cpu_us_per_request", binary.cpu_us, "us");
            }
            for (side, floor, total) in
                [("local", our_floor, Some(ours_us)), ("peer", their_floor, theirs_us)]
            {
                let (Some(floor), Some(total)) = (floor, total) else { continue };
                if let Some(switches) = floor.switches {
                    figures.push(
                        format!("edge.{side}.http_floor_context_switches_per_request"),
                        switches,
                        "count",
                    );
                }
                let floor = floor.cpu_us;
                figures.push(format!("edge.{side}.http_floor_cpu_us_per_request"), floor, "us");
                figures.push(
                    format!("edge.{side}.cpu_us_per_request_beyond_http_floor"),
                    total - floor,
                    "us",
                );
            }
        }
        None => eprintln!("no rung passed by both servers: no CPU per request"),
    }
    node.kill();
    Ok(figures)
}

/// The Python peer once it has climbed the ladder, still running (killed when dropped).
struct PeerRun {
    ladder: Ladder,
    target: Target<'static>,
    _process: Peer,
}

/// Drives the Python peer up the same ladder, adds its figures and the max-rate ratio to
/// `figures`, and returns it still running (none if the peer's venv is missing: that is said,
/// not an error).
fn peer_figures(
    repo: &Path,
    model: &Path,
    bodies: &[Vec<u8>],
    step: Duration,
    ours: &Ladder,
    figures: &mut Figures,
) -> anyhow::Result<Option<PeerRun>> {
    let Some(mut peer) = Peer::start(repo, model)? else { return Ok(None) };
    wait_ready(peer.addr, "python peer", || peer.child.try_wait().ok().flatten())?;
    let target = Target::new("python onnxruntime peer", peer.addr, peer.child.id(), bodies, |_| true);
    let mut theirs = drive_ladder(&target, step)?;
    if let Some(m) = theirs.moderate.as_mut() {
        figures.push("edge.peer.p50_us", m.p(0.5), "us");
        figures.push("edge.peer.p99_us", m.p(0.99), "us");
    }
    figures.push("edge.peer.max_rps", theirs.max_rps, "items_per_s");
    if theirs.max_rps > 0.0 {
        figures.push("edge.speedup_vs_python_ort.max_rps", ours.max_rps / theirs.max_rps, "ratio");
    } else {
        eprintln!("the peer passed no rung of the ladder: no speedup ratio");
    }
    Ok(Some(PeerRun { ladder: theirs, target, _process: peer }))
}

/// What one server's process spent per answered request over a rung.
struct PerRequest {
    cpu_us: f64,
    /// Context switches, where `/proc` tells.
    switches: Option<f64>,
}

/// CPU time (and context switches) per answered request of `target`'s process over one rung
/// at `rate`, the rung run again if it fails, as on the ladder; `None`, with the reason on
/// stderr, if it fails twice, cannot be driven, or `/proc` does not tell. These figures are
/// extra: their loss must not cost the ladder's.
fn cpu_per_request_at(target: &Target<'_>, rate: f64, step: Duration) -> Option<PerRequest> {
    let measure = || -> anyhow::Result<Option<PerRequest>> {
        drive(target, LADDER[0], Duration::from_millis(300))?;
        for _ in 0..2 {
            let mut rung = drive(target, rate, step)?;
            if rung.passes() {
                let answered = rung.latencies_us.len() as f64;
                let switches = rung.switches.map(|n| n as f64 / answered);
                return Ok(rung
                    .cpu
                    .map(|cpu| PerRequest { cpu_us: cpu.as_secs_f64() * 1e6 / answered, switches }));
            }
            eprintln!("{}: {rate} rps: p99 {:.0} us, {} errors", target.name, rung.p(0.99), rung.errors);
        }
        Ok(None)
    };
    measure().unwrap_or_else(|e| {
        eprintln!("{}: no CPU figure at {rate} rps: {e:#}", target.name);
        None
    })
}

/// Every test image as a request with the binary tensor data extension (the header, then
/// the 784 bytes), the encoding KServe's own clients send by default.
fn binary_requests(addr: SocketAddr, test: &Digits, n: usize) -> anyhow::Result<Vec<Vec<u8>>> {
    (0..n)
        .map(|i| {
            let header = json!({
                "id": format!("img-{i}"),
                "inputs": [{ "name": "image", "shape": [28, 28], "datatype": "UINT8", "parameters": { "binary_data_size": 784 } }]
            });
            Ok(loadgen::post_binary(addr, INFER_PATH, &serde_json::to_vec(&header)?, test.image(i)))
        })
        .collect()
}

/// The node's config: no upstream, threshold 0 (every answer local), no cache, no mode
/// switching, so load cannot move the node into another mode mid-ladder.
fn node_config(model: &Path, plugin: &Path) -> ReferenceNode {
    let mut node = ReferenceNode::new("bench-edge", model, plugin);
    node.route.cache_ttl_s = 0;
    node.node.modes.switching.automatic = false;
    node
}

/// Medians of one request at a time, in microseconds (see [`measure_overhead`]).
struct Sequential {
    /// Over HTTP, JSON tensors.
    http: f64,
    /// Over HTTP, the same image as binary tensor data.
    http_binary: f64,
    /// Handed straight to an in-process sandbox.
    direct: f64,
    /// An empty `GET /v2/health/live`.
    floor: f64,
}

/// Medians of one request at a time over HTTP (with JSON tensors, and with the binary
/// extension), of the same request handed to an in-process sandbox, and of an empty
/// `GET /v2/health/live` over the same connection (the cost of the client, the loopback round
/// trip and hyper, with no node work), taken in turn so that none always runs on the warmer
/// cache.
fn measure_overhead(
    target: &Target<'_>,
    test: &Digits,
    model: &Path,
    wasm: &Path,
    samples: usize,
) -> anyhow::Result<Sequential> {
    let (sandbox, _models) = crate::sandbox::mnist_sandbox(model, wasm)?;
    let n = target.requests.len();
    let requests = crate::sandbox::digit_requests(test, n)?;
    let binary = binary_requests(target.addr, test, n)?;
    let mut conn = Conn::connect(target.addr)?;
    let live = loadgen::get(target.addr, "/v2/health/live");
    let mut timed = |request: &[u8]| -> anyhow::Result<f64> {
        let start = Instant::now();
        let (status, body) = conn.round_trip(request)?;
        let elapsed = start.elapsed().as_secs_f64() * 1e6;
        if status != 200 {
            bail!("HTTP {status}: {}", String::from_utf8_lossy(body));
        }
        Ok(elapsed)
    };
    let direct = |i: usize| -> anyhow::Result<f64> {
        let start = Instant::now();
        std::hint::black_box(sandbox.handle("mnist", requests[i].request())?);
        Ok(start.elapsed().as_secs_f64() * 1e6)
    };
    eprintln!("overhead: warming up, then {samples} requests each way ...");
    let mut samples_of = [const { Vec::new() }; 4];
    for k in 0..200 + samples {
        let i = k % n;
        // Each of the four starts a round in turn.
        for j in 0..4 {
            let way = (k + j) % 4;
            let us = match way {
                0 => timed(&target.requests[i])?,
                1 => timed(&binary[i])?,
                2 => direct(i)?,
                _ => timed(&live)?,
            };
            if k >= 200 {
                samples_of[way].push(us);
            }
        }
    }
    let [mut http, mut http_binary, mut direct, mut floor] = samples_of;
    Ok(Sequential {
        http: median(&mut http),
        http_binary: median(&mut http_binary),
        direct: median(&mut direct),
        floor: median(&mut floor),
    })
}

/// Drives `target` up the ladder: every rung up to the moderate rate, then on until one fails.
fn drive_ladder(target: &Target<'_>, step: Duration) -> anyhow::Result<Ladder> {
    let mut ladder = Ladder {
        moderate: None,
        max_rps: 0.0,
        top_passed: false,
        cpu_us_per_request: Vec::new(),
        switches_per_request: Vec::new(),
    };
    // Warm the connections and both sides' caches at the lowest rate first.
    drive(target, LADDER[0], Duration::from_millis(500))?;
    for (n, &rate) in LADDER.iter().enumerate() {
        let mut rung = drive(target, rate, step)?;
        if !rung.passes() && rate > MODERATE_RPS {
            // This machine is shared: one stall elsewhere can push a rung's p99 over the
            // limit. A rate fails only when it fails twice running.
            let (p99, errors) = (rung.p(0.99), rung.errors);
            eprintln!(
                "{}: {rate} rps: p99 {p99:.0} us, {errors} errors; trying this rate again",
                target.name
            );
            rung = drive(target, rate, step)?;
        }
        let passes = rung.passes();
        let (p50, p99) = (rung.p(0.5), rung.p(0.99));
        eprintln!(
            "{}: {rate} rps: {} answers, {} errors, p50 {p50:.0} us, p99 {p99:.0} us{}",
            target.name,
            rung.latencies_us.len(),
            rung.errors,
            if passes { "" } else { "  (fails)" }
        );
        if passes {
            ladder.max_rps = rung.rate;
            ladder.top_passed = n + 1 == LADDER.len();
        }
        let answered = rung.latencies_us.len().max(1) as f64;
        if passes && let Some(cpu) = rung.cpu {
            ladder.cpu_us_per_request.push((rate, cpu.as_secs_f64() * 1e6 / answered));
        }
        if passes && let Some(switches) = rung.switches {
            ladder.switches_per_request.push((rate, switches as f64 / answered));
        }
        if rate == MODERATE_RPS {
            ladder.moderate = Some(rung);
        }
        if !passes && rate >= MODERATE_RPS {
            break;
        }
    }
    Ok(ladder)
}

/// One rung: `rate × duration` requests sent on schedule, then every answer awaited (each
/// bounded by [`REQUEST_TIMEOUT`]).
fn drive(target: &Target<'_>, rate: f64, duration: Duration) -> anyhow::Result<Rung> {
    let cpu_before = procfs::cpu_time(target.pid);
    let switches_before = procfs::context_switches(target.pid);
    let measured = loadgen::drive(&Load {
        addr: target.addr,
        requests: &target.requests,
        rate,
        duration,
        connections: CONNECTIONS,
        timeout: REQUEST_TIMEOUT,
        accept: target.accept,
    })
    .with_context(|| format!("driving the {} at {rate} rps", target.name))?;
    if let Some(e) = &measured.first_error {
        eprintln!("{}: {rate} rps: {} errors, the first: {e}", target.name, measured.errors);
    }
    let cpu =
        procfs::cpu_time(target.pid).zip(cpu_before).map(|(after, before)| after.saturating_sub(before));
    let switches = procfs::context_switches(target.pid)
        .zip(switches_before)
        .map(|(after, before)| after.saturating_sub(before));
    Ok(Rung { rate, latencies_us: measured.latencies_us, errors: measured.errors, cpu, switches })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Polls `GET /v2/health/ready` until it answers 200, for up to 60 s, or until `exited`
/// says the server's process ended.
fn wait_ready<T: std::fmt::Debug>(
    addr: SocketAddr,
    name: &str,
    mut exited: impl FnMut() -> Option<T>,
) -> anyhow::Result<()> {
    let ready = loadgen::get(addr, "/v2/health/ready");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(status) = exited() {
            bail!("the {name} exited ({status:?}) before it was ready");
        }
        if Conn::connect(addr).and_then(|mut c| Ok(c.round_trip(&ready)?.0 == 200)).unwrap_or(false) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("the {name} was not ready on {addr} within 60 s")
}

/// The Python peer process; killed when dropped.
struct Peer {
    child: Child,
    addr: SocketAddr,
}

impl Peer {
    /// Starts `tools/kserve_peer.py` from the peer venv, or says how to make the venv and
    /// returns `None`.
    fn start(repo: &Path, model: &Path) -> anyhow::Result<Option<Peer>> {
        let Some(python) = crate::peer_python(repo) else { return Ok(None) };
        // Ask the kernel for a free loopback port, then hand it to the peer.
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
        let child = Command::new(&python)
            .arg(repo.join("tools/kserve_peer.py"))
            .arg(model)
            .arg(port.to_string())
            // It exits when this process, holding the pipe's other end, ends (even killed).
            .arg("--exit-with-parent")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting the python peer with {}", python.display()))?;
        Ok(Some(Peer { child, addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)) }))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use cascade_runtime::config;

    use super::*;

    fn ladder(rates: &[f64]) -> Ladder {
        let cpu_us_per_request = rates.iter().map(|&r| (r, 1e6 / r)).collect();
        Ladder {
            moderate: None,
            max_rps: 0.0,
            top_passed: false,
            cpu_us_per_request,
            switches_per_request: Vec::new(),
        }
    }

    #[test]
    fn cpu_per_request_is_compared_at_a_rate_both_servers_passed() {
        let ours = ladder(&[250.0, 500.0, 1000.0, 4000.0, 5000.0, 6000.0]);
        // Both pass the preferred rate: it is the one.
        assert_eq!(ours.cpu_rate(Some(&ladder(&[250.0, 5000.0]))), Some(CPU_RPS));
        // The peer stops below it: the highest rate both passed.
        assert_eq!(ours.cpu_rate(Some(&ladder(&[250.0, 500.0, 1000.0, 2000.0]))), Some(1000.0));
        // No peer: the node's own preferred rate.
        assert_eq!(ours.cpu_rate(None), Some(CPU_RPS));
        assert_eq!(ladder(&[250.0, 500.0]).cpu_rate(None), Some(500.0));
        // Nothing in common: nothing to compare.
        assert_eq!(ladder(&[250.0]).cpu_rate(Some(&ladder(&[500.0]))), None);
        assert_eq!(ours.cpu_at(1000.0), Some(1000.0));
    }

    #[test]
    fn a_rung_passes_only_without_errors_and_with_p99_under_the_limit() {
        let fast = || (1..=100).map(|i| i as f64 * 10.0).collect::<Vec<_>>();
        assert!(Rung { rate: 1.0, latencies_us: fast(), errors: 0, cpu: None, switches: None }.passes());
        assert!(!Rung { rate: 1.0, latencies_us: fast(), errors: 1, cpu: None, switches: None }.passes());
        assert!(!Rung { rate: 1.0, latencies_us: Vec::new(), errors: 0, cpu: None, switches: None }.passes());
        // 2 of 100 answers over the limit put the p99 over it.
        let mut slow = fast();
        slow[98] = P99_LIMIT_US + 1.0;
        slow[99] = P99_LIMIT_US + 1.0;
        assert!(!Rung { rate: 1.0, latencies_us: slow, errors: 0, cpu: None, switches: None }.passes());
    }

    /// The benchmark's premise: no upstream, every answer local, no cache.
    #[test]
    fn the_node_config_answers_everything_locally_and_uncached() {
        let dir = tempfile::tempdir().unwrap();
        // Resolving reads and hashes the plugin file; compiling it is the node's job.
        let plugin = dir.path().join("plugin.wasm");
        std::fs::write(&plugin, b"not compiled here").unwrap();
        let model = ReferenceModel::EdgeInt8.path(&cascade_runtime::reference::default_models_dir());
        let file = write_config(&node_config(&model, &plugin), dir.path()).unwrap();
        let resolved = config::load(&file).unwrap().resolve().unwrap();
        let settings = &resolved.settings;
        assert!(settings.upstream.is_none());
        let route = &settings.routes["digits"];
        assert_eq!(route.cache_ttl, Duration::ZERO);
        assert_eq!(route.thresholds, [0.0; 3]);
        assert!(route.rate_limit.is_none());
    }

    #[test]
    fn contains_finds_a_needle_anywhere() {
        assert!(contains(br#"{"cache":"miss","escalated":false}"#, br#""escalated":false"#));
        assert!(!contains(br#"{"cache":"hit"}"#, br#""cache":"miss""#));
    }
}
