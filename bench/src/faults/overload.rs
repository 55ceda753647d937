//! Too much of a good thing: 3x the capacity of an edge, offered open-loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use edge_node::figures::percentile;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

use super::cores::{self, Cores, born_on_node_core};
use super::overload_plot as plot;
use super::{Figure, Setup, loopback};
use crate::loadgen::{self, Conn};
use crate::procfs::{cpu_time, peak_rss_mib};

/// The route's bulkhead in the overload scenario, sized for the one core the node gets: one
/// request runs and one waits, so the core never idles between answers; beyond that the
/// node refuses (503) before reading the body. A CPU-bound plugin gains nothing from running
/// two at once on one core: each takes twice as long. The sizes compared are in
/// docs/performance.md, "Overload", "The route's bulkhead".
const IN_FLIGHT: u32 = 1;
const QUEUE: u32 = 1;

/// An admitted answer slower than this (several times the unloaded p99) has its receipt read
/// for the node's own time on it.
const SLOW_ANSWER: Duration = Duration::from_millis(4);

/// Receipts of slow answers each connection's reader parses, at most.
const RECEIPTS_READ: usize = 100;

/// Connections offering the 3x load.
const STORM_CONNECTIONS: usize = 64;

/// How long a client waits for an answer before counting it as failed.
pub(super) const TIMEOUT: Duration = Duration::from_secs(2);

/// Distinct requests the load cycles through.
pub(super) const BODIES: usize = 2000;

/// How far behind its serving thread the governed edge lets fall before it sheds
/// (`admission.max_intake_lag_us`).
const MAX_INTAKE_LAG_US: u64 = 500;

/// `faults.overload.*`: two edges (no upstream, every answer local), one with the intake
/// governor (`admission.max_intake_lag_us`) and one without, each given the same core in
/// turn. The ungoverned one is first driven closed-loop to measure the capacity; then each
/// is offered a tenth of it (unloaded) and three times it (loaded), open-loop, alternating.
/// Figures: the p99 of the admitted requests loaded over unloaded, the share refused (429 or
/// 503) and the peak RSS of the governed edge; the ungoverned edge's ratio and share beside
/// them, and what the governor costs in answers (admitted per second, governed over not).
///
/// Where the machine has two cores or more, the nodes run on one and the generator on
/// another: on cores they share, a CPU-bound node's capacity is whatever the generator
/// leaves it, and the generator cannot offer three times that.
pub(super) fn overload(s: &Setup, rt: &Runtime) -> Result<Vec<Figure>> {
    let (rounds, window) = s.pick((1, Duration::from_secs(2)), (2, Duration::from_secs(4)));
    let mut edges = Vec::new();
    for (name, lag) in [("overload-governed", MAX_INTAKE_LAG_US), ("overload-ungoverned", 0)] {
        let mut edge = s.edge(0.0)?;
        edge.config.route.max_in_flight = IN_FLIGHT;
        edge.config.route.queue_len = QUEUE;
        edge.config.node.admission.max_intake_lag_us = lag;
        let process = born_on_node_core(|| rt.block_on(s.start(&edge, name)))?;
        let cores = Cores::split(process.id(), "overload");
        edges.push((name, edge, process, cores));
    }
    let requests = s.requests(edges[0].1.http, BODIES);
    // As many closed-loop clients as the node admits, so that it is never idle.
    let clients = (IN_FLIGHT + QUEUE) as usize;
    let (capacity, cpu_per_answer) = {
        let (_, edge, process, cores) = &edges[1];
        let length = s.pick(Duration::from_secs(2), Duration::from_secs(3));
        capacity(process.id(), loopback(edge.http), &requests, clients, length, *cores)?
    };
    eprintln!(
        "faults.overload: capacity {capacity:.0} answers/s closed-loop with {clients} clients, {cpu_per_answer:.0} us of the node's CPU per answer"
    );
    anyhow::ensure!(capacity > 0.0, "the edge answered nothing closed-loop");

    let mut runs =
        [(Scheduled::default(), Scheduled::default()), (Scheduled::default(), Scheduled::default())];
    // The first 3x phase of each edge, as (seconds into it, latency) of every admitted answer.
    let mut pictured: [Vec<(f64, f64)>; 2] = Default::default();
    for round in 0..rounds {
        for (((name, edge, process, cores), (unloaded, loaded)), picture) in
            edges.iter().zip(runs.iter_mut()).zip(pictured.iter_mut())
        {
            let (pid, addr) = (process.id(), loopback(edge.http));
            let calm = scheduled(pid, addr, &requests, (capacity / 10.0).max(50.0), window, 8, *cores)?;
            eprintln!("faults.overload: round {round}, {name}, unloaded: {calm}");
            unloaded.add(calm);
            let storm = scheduled(pid, addr, &requests, 3.0 * capacity, window, STORM_CONNECTIONS, *cores)?;
            eprintln!("faults.overload: round {round}, {name}, 3x capacity: {storm}");
            if round == 0 {
                *picture = storm.over_time();
            }
            loaded.add(storm);
        }
    }
    let mut ratios = Vec::new();
    for ((name, ..), (unloaded, loaded)) in edges.iter().zip(runs.iter_mut()) {
        anyhow::ensure!(
            !unloaded.admitted_us.is_empty() && !loaded.admitted_us.is_empty(),
            "no admitted request to measure"
        );
        let (calm_p99, storm_p99) =
            (percentile(&mut unloaded.admitted_us, 0.99), percentile(&mut loaded.admitted_us, 0.99));
        eprintln!("faults.overload: {name}: admitted p99 {storm_p99:.0} us at 3x, {calm_p99:.0} us unloaded");
        if !loaded.slow_node_us.is_empty() {
            eprintln!(
                "faults.overload: {name}: in {} receipts of admitted answers at 3x that took over {} ms, the node's own stages (timings_us.total) took {:.0} us at the median, {:.0} us at most",
                loaded.slow_node_us.len(),
                SLOW_ANSWER.as_millis(),
                percentile(&mut loaded.slow_node_us.clone(), 0.5),
                loaded.slow_node_us.iter().copied().fold(0.0, f64::max)
            );
        }
        ratios.push(storm_p99 / calm_p99);
    }
    if let Some(dir) = &s.plot {
        let file = dir.join("overload.png");
        let goal = 2.0 * percentile(&mut runs[0].0.admitted_us.clone(), 0.99);
        plot::draw(&file, &pictured[0], &pictured[1], goal)?;
        eprintln!("faults.overload: drew {}", file.display());
    }
    let refused = |l: &Scheduled| l.refused_us.len() as f64 / l.sent().max(1) as f64;
    let (governed, ungoverned) = (&runs[0].1, &runs[1].1);
    if let Some((answer, refusal)) = costs(governed, ungoverned) {
        eprintln!(
            "faults.overload: the node's CPU per answer {answer:.1} us and per refusal {refusal:.1} us at 3x (solved from the two edges' 3x phases)"
        );
    }
    Ok(vec![
        ("faults.overload.admitted_p99_ratio", ratios[0], "ratio"),
        ("faults.overload.rejected_share", refused(governed), "fraction"),
        ("faults.overload.peak_rss_mib", peak_rss_mib(edges[0].2.id())?, "MiB"),
        ("faults.overload.ungoverned.admitted_p99_ratio", ratios[1], "ratio"),
        ("faults.overload.ungoverned.rejected_share", refused(ungoverned), "fraction"),
        (
            "faults.overload.ratio_governed_over_ungoverned.admitted_per_s",
            governed.admitted_us.len() as f64 / ungoverned.admitted_us.len().max(1) as f64,
            "ratio",
        ),
    ])
}

/// What an answer and a refusal cost the node (µs of CPU each), from two runs that mixed
/// them differently: node CPU = answers × a + refusals × r, once per run, solved for a and r.
/// `None` when the two mixes are too alike to tell the costs apart.
fn costs(one: &Scheduled, other: &Scheduled) -> Option<(f64, f64)> {
    let row = |s: &Scheduled| {
        (s.admitted_us.len() as f64, s.refused_us.len() as f64, s.node_cpu.as_secs_f64() * 1e6)
    };
    let ((a1, r1, c1), (a2, r2, c2)) = (row(one), row(other));
    let det = a1 * r2 - a2 * r1;
    (det.abs() > 1e-6 * (a1 * r2).abs().max((a2 * r1).abs()).max(1.0))
        .then(|| ((c1 * r2 - c2 * r1) / det, (a1 * c2 - a2 * c1) / det))
}

/// What [`scheduled`] measured.
#[derive(Debug, Default)]
struct Scheduled {
    /// Latencies of the 200 answers, µs from when each request was sent.
    admitted_us: Vec<f64>,
    /// When each of those requests was sent (same order).
    admitted_sent: Vec<Instant>,
    /// For admitted answers slower than [`SLOW_ANSWER`]: the node's own time on them (µs,
    /// the `timings_us.total` of their receipts), to tell its work from waiting outside it.
    slow_node_us: Vec<f64>,
    /// Latencies of the answers 429 or 503 (refused by the node), µs from when each request
    /// was sent: a wait the admitted requests share was spent before the node decided (in the
    /// socket buffers and its run queue), not in the route's queue.
    refused_us: Vec<f64>,
    /// Anything else: another status, an error, a timeout.
    failed: usize,
    /// The generator's own lateness: how far behind schedule requests were sent, at worst (µs).
    worst_send_lag_us: f64,
    /// The node's CPU time and the wall time from the first request sent to the last answer.
    node_cpu: Duration,
    wall: Duration,
}

impl Scheduled {
    /// Every admitted answer as (seconds since the first was sent, latency in µs).
    fn over_time(&self) -> Vec<(f64, f64)> {
        let Some(&first) = self.admitted_sent.iter().min() else { return Vec::new() };
        self.admitted_sent
            .iter()
            .map(|at| at.duration_since(first).as_secs_f64())
            .zip(self.admitted_us.iter().copied())
            .collect()
    }

    fn sent(&self) -> usize {
        self.admitted_us.len() + self.refused_us.len() + self.failed
    }

    fn add(&mut self, other: Scheduled) {
        self.admitted_us.extend(other.admitted_us);
        self.admitted_sent.extend(other.admitted_sent);
        self.slow_node_us.extend(other.slow_node_us);
        self.refused_us.extend(other.refused_us);
        self.failed += other.failed;
        self.worst_send_lag_us = self.worst_send_lag_us.max(other.worst_send_lag_us);
        self.node_cpu += other.node_cpu;
        self.wall += other.wall;
    }
}

impl std::fmt::Display for Scheduled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p99 = |v: &[f64]| if v.is_empty() { 0.0 } else { percentile(&mut v.to_vec(), 0.99) };
        let wall = self.wall.as_secs_f64().max(1e-9);
        // Little's law: the mean number of requests between send and answer.
        let waiting =
            (self.admitted_us.iter().sum::<f64>() + self.refused_us.iter().sum::<f64>()) / 1e6 / wall;
        write!(
            f,
            "{} admitted (p99 {:.0} us), {} refused (p99 {:.0} us), {} failed; the node busy {:.0}% of {:.1} s, {:.1} requests outstanding on average; the generator sent up to {:.0} us late",
            self.admitted_us.len(),
            p99(&self.admitted_us),
            self.refused_us.len(),
            p99(&self.refused_us),
            self.failed,
            100.0 * self.node_cpu.as_secs_f64() / wall,
            wall,
            waiting,
            self.worst_send_lag_us
        )
    }
}

/// Open-loop load at `rate` for `length` over `connections` keep-alive connections, all on
/// one single-threaded runtime on the generator's core, and the node's (`node`) CPU time
/// meanwhile: one dispatcher sends request `k` at `t0 + k / rate`, to the microsecond, on
/// connection `k mod connections` whether or not its last request has been answered (HTTP/1.1
/// pipelining), and a reader per connection reads the answers in order. So the load does not
/// wait for the node: a generator that waited for a free connection would be closed-loop
/// once all were busy, and by Little's law every request would then wait connections /
/// throughput whatever the node did. Unlike [`loadgen::drive`], a refusal keeps its
/// connection (the response was whole), so a node that refuses most requests does not make
/// the generator reconnect for each. A request's latency runs from when it was sent. The
/// generator's thread runs in the real-time class where it may, so that other threads of its
/// core (the machine's own agents among them) do not hold its sends and reads back for
/// milliseconds. Its worst lateness is reported beside the figures, so one that cannot offer the
/// rate shows.
fn scheduled(
    node: u32,
    addr: SocketAddr,
    requests: &Arc<Vec<Vec<u8>>>,
    rate: f64,
    length: Duration,
    connections: usize,
    cores: Cores,
) -> Result<Scheduled> {
    let total = (rate * length.as_secs_f64()).round() as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    cores.run_here(|| {
        cores::run_first(|| {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let (mut writers, mut readers) = (Vec::new(), Vec::new());
                for _ in 0..connections {
                    let stream = tokio::net::TcpStream::connect(addr)
                        .await
                        .with_context(|| format!("connecting to {addr}"))?;
                    stream.set_nodelay(true)?;
                    let (read, write) = stream.into_split();
                    let (sent_tx, sent_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
                    writers.push((write, sent_tx));
                    readers.push(tokio::spawn(read_answers(read, sent_rx)));
                }
                let t0 = Instant::now() + Duration::from_millis(50);
                tokio::time::sleep_until(t0.into()).await;
                let cpu0 = cpu_time(node).unwrap_or_default();
                let (mut lag, mut unsent) = (Duration::ZERO, 0);
                for k in 0..total {
                    let due = t0 + interval.mul_f64(k as f64);
                    until(due).await;
                    lag = lag.max(due.elapsed());
                    let (write, sent) = &mut writers[k % connections];
                    let at = Instant::now();
                    // A request on a connection whose reader has given up (an error, a timeout)
                    // counts as failed.
                    if write.write_all(&requests[k % requests.len()]).await.is_err() || sent.send(at).is_err()
                    {
                        unsent += 1;
                    }
                }
                // Readers end once their last answer is in; the write halves stay open until
                // then (a client that half-closes its connection gets no answer from hyper).
                let (writes, sents): (Vec<_>, Vec<_>) = writers.into_iter().unzip();
                drop(sents);
                let mut all = Scheduled {
                    worst_send_lag_us: lag.as_secs_f64() * 1e6,
                    failed: unsent,
                    ..Scheduled::default()
                };
                for r in readers {
                    all.add(r.await.context("a load reader panicked")?);
                }
                all.wall = t0.elapsed();
                all.node_cpu = cpu_time(node).unwrap_or_default().saturating_sub(cpu0);
                drop(writes);
                Ok(all)
            })
        })
    })
}

/// Waits until `due`, to the microsecond: tokio's timers fire on whole milliseconds, which
/// would release a millisecond's requests at once (at 3x capacity, dozens). The last
/// millisecond is spent yielding, which lets the readers run as their answers arrive; the
/// generator has a core of its own to spend on it.
async fn until(due: Instant) {
    if let Some(early) = due.checked_sub(Duration::from_millis(1)) {
        tokio::time::sleep_until(early.into()).await;
    }
    while Instant::now() < due {
        tokio::task::yield_now().await;
    }
}

/// Reads a connection's answers, in order, one per request sent on it (`sent` says when);
/// stops at the first error or timeout.
async fn read_answers(
    mut read: tokio::net::tcp::OwnedReadHalf,
    mut sent: tokio::sync::mpsc::UnboundedReceiver<Instant>,
) -> Scheduled {
    let mut out = Scheduled::default();
    let mut buf = Vec::with_capacity(16 * 1024);
    // Bytes of the previous answer are dropped only once it has been taken, so that a
    // following answer read in the same call (pipelined requests) is kept.
    let mut taken = 0;
    while let Some(at) = sent.recv().await {
        buf.drain(..taken);
        let answer = tokio::time::timeout(TIMEOUT, async {
            loop {
                if let Some(f) = loadgen::frame(&buf)? {
                    return Ok::<_, anyhow::Error>((f.status, f.body_start..f.end));
                }
                buf.reserve(16 * 1024);
                if read.read_buf(&mut buf).await? == 0 {
                    anyhow::bail!("closed");
                }
            }
        })
        .await;
        match answer {
            Ok(Ok((200, body))) => {
                taken = body.end;
                let took = at.elapsed();
                out.admitted_us.push(took.as_secs_f64() * 1e6);
                out.admitted_sent.push(at);
                if took > SLOW_ANSWER && out.slow_node_us.len() < RECEIPTS_READ {
                    // A sample, so that parsing receipts takes little from the generator.
                    let receipt = serde_json::from_slice::<serde_json::Value>(&buf[body]).ok();
                    let total =
                        receipt.as_ref().and_then(|v| v["parameters"]["timings_us"]["total"].as_f64());
                    out.slow_node_us.extend(total);
                }
            }
            Ok(Ok((429 | 503, body))) => {
                taken = body.end;
                out.refused_us.push(at.elapsed().as_secs_f64() * 1e6);
            }
            Ok(Ok((_, body))) => {
                taken = body.end;
                out.failed += 1;
            }
            Ok(Err(_)) | Err(_) => {
                out.failed += 1;
                return out;
            }
        }
    }
    out
}

/// Answers per second from `clients` blocking clients sending back to back for `length`, and
/// the node's (`node`) CPU time per answer meanwhile (µs).
fn capacity(
    node: u32,
    addr: SocketAddr,
    requests: &Arc<Vec<Vec<u8>>>,
    clients: usize,
    length: Duration,
    cores: Cores,
) -> Result<(f64, f64)> {
    let until = Instant::now() + length;
    let cpu0 = cpu_time(node).unwrap_or_default();
    let answered = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..clients)
            .map(|c| {
                scope.spawn(move || -> Result<usize> {
                    cores.enter();
                    let mut conn = Conn::connect(addr)?;
                    let mut ok = 0;
                    let mut i = c;
                    while Instant::now() < until {
                        if conn.round_trip(&requests[i % requests.len()])?.0 == 200 {
                            ok += 1;
                        }
                        i += clients;
                    }
                    Ok(ok)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().map_err(|_| anyhow::anyhow!("a client panicked"))?)
            .sum::<Result<usize>>()
    })?;
    let cpu = cpu_time(node).unwrap_or_default().saturating_sub(cpu0);
    Ok((answered as f64 / length.as_secs_f64(), cpu.as_secs_f64() * 1e6 / answered.max(1) as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(answers: usize, refusals: usize, answer_us: f64, refusal_us: f64) -> Scheduled {
        let cpu = answers as f64 * answer_us + refusals as f64 * refusal_us;
        Scheduled {
            admitted_us: vec![0.0; answers],
            refused_us: vec![0.0; refusals],
            node_cpu: Duration::from_secs_f64(cpu / 1e6),
            ..Scheduled::default()
        }
    }

    #[test]
    fn the_costs_of_an_answer_and_a_refusal_are_solved_from_two_mixes() {
        let (a, r) = costs(&phase(17_000, 100_000, 48.0, 22.0), &phase(50_000, 69_000, 48.0, 22.0)).unwrap();
        assert!((a - 48.0).abs() < 0.01 && (r - 22.0).abs() < 0.01, "{a} {r}");
        // The same mix twice says nothing about either.
        assert!(costs(&phase(100, 200, 48.0, 22.0), &phase(200, 400, 48.0, 22.0)).is_none());
    }
}
