//! Too much of a good thing: 3x the capacity of an edge, offered open-loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use edge_node::figures::percentile;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

use super::cores::{Cores, born_on_node_core};
use super::{Figure, Setup, loopback};
use crate::loadgen::{self, Conn};
use crate::procfs::peak_rss_mib;

/// The route's bulkhead in the overload scenario, sized for the one core the node gets: one
/// request runs and one waits, so the core never idles between answers; beyond that the
/// node refuses (503) before reading the body. A CPU-bound plugin gains nothing from running
/// two at once on one core: each takes twice as long. The sizes compared are in
/// docs/performance.md, "Overload bulkhead".
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

/// `faults.overload.*`: an edge (no upstream, every answer local) first driven closed-loop to
/// measure its capacity, then open-loop at a tenth of it (unloaded) and at three times it
/// (loaded), alternating; the p99 of the admitted requests loaded over unloaded, the share
/// the node refused (429 or 503), and the edge's peak RSS.
///
/// Where the machine has two cores or more, the node runs on one and the generator on
/// another: on cores they share, a CPU-bound node's capacity is whatever the generator
/// leaves it, and the generator cannot offer three times that (it falls behind its own
/// schedule, which then shows as latency that is not the node's).
pub(super) fn overload(s: &Setup, rt: &Runtime) -> Result<Vec<Figure>> {
    let (rounds, window) = s.pick((1, Duration::from_secs(2)), (2, Duration::from_secs(4)));
    let mut edge = s.edge(0.0)?;
    edge.config.route.max_in_flight = IN_FLIGHT;
    edge.config.route.queue_len = QUEUE;
    let process = born_on_node_core(|| rt.block_on(s.start(&edge, "overload-edge")))?;
    let cores = Cores::split(process.id(), "overload");
    let addr = loopback(edge.http);
    let requests = s.requests(edge.http, BODIES);
    // As many closed-loop clients as the node admits, so that it is never idle.
    let clients = (IN_FLIGHT + QUEUE) as usize;
    let capacity =
        capacity(addr, &requests, clients, s.pick(Duration::from_secs(2), Duration::from_secs(3)), cores)?;
    eprintln!("faults.overload: capacity {capacity:.0} answers/s closed-loop with {clients} clients");
    anyhow::ensure!(capacity > 0.0, "the edge answered nothing closed-loop");

    let (mut unloaded, mut loaded) = (Scheduled::default(), Scheduled::default());
    for round in 0..rounds {
        let calm = scheduled(addr, &requests, (capacity / 10.0).max(50.0), window, 8, cores)?;
        eprintln!("faults.overload: round {round}, unloaded: {calm}");
        unloaded.add(calm);
        // Enough connections that each has several milliseconds between its requests, so
        // that one waiting for its answer does not hold back the schedule: the node, not the
        // client, decides what waits.
        let storm = scheduled(addr, &requests, 3.0 * capacity, window, STORM_CONNECTIONS, cores)?;
        eprintln!("faults.overload: round {round}, 3x capacity: {storm}");
        loaded.add(storm);
    }
    anyhow::ensure!(
        !unloaded.admitted_us.is_empty() && !loaded.admitted_us.is_empty(),
        "no admitted request to measure"
    );
    let (calm_p99, storm_p99) =
        (percentile(&mut unloaded.admitted_us, 0.99), percentile(&mut loaded.admitted_us, 0.99));
    eprintln!("faults.overload: admitted p99 {storm_p99:.0} us at 3x, {calm_p99:.0} us unloaded");
    if !loaded.slow_node_us.is_empty() {
        eprintln!(
            "faults.overload: in {} receipts of admitted answers at 3x that took over {} ms, the node's own stages (timings_us.total) took {:.0} us at the median, {:.0} us at most",
            loaded.slow_node_us.len(),
            SLOW_ANSWER.as_millis(),
            percentile(&mut loaded.slow_node_us.clone(), 0.5),
            loaded.slow_node_us.iter().copied().fold(0.0, f64::max)
        );
    }
    Ok(vec![
        ("faults.overload.admitted_p99_ratio", storm_p99 / calm_p99, "ratio"),
        ("faults.overload.rejected_share", loaded.rejected as f64 / loaded.sent().max(1) as f64, "fraction"),
        ("faults.overload.peak_rss_mib", peak_rss_mib(process.id())?, "MiB"),
    ])
}

/// What [`scheduled`] measured.
#[derive(Debug, Default)]
struct Scheduled {
    /// Latencies of the 200 answers, µs from when each request was sent.
    admitted_us: Vec<f64>,
    /// For admitted answers slower than [`SLOW_ANSWER`]: the node's own time on them (µs,
    /// the `timings_us.total` of their receipts), to tell its work from waiting outside it.
    slow_node_us: Vec<f64>,
    /// Answers 429 or 503: refused by the node.
    rejected: usize,
    /// Anything else: another status, an error, a timeout.
    failed: usize,
    /// The generator's own lateness: how far behind schedule requests were sent, at worst (µs).
    worst_send_lag_us: f64,
}

impl Scheduled {
    fn sent(&self) -> usize {
        self.admitted_us.len() + self.rejected + self.failed
    }

    fn add(&mut self, other: Scheduled) {
        self.admitted_us.extend(other.admitted_us);
        self.slow_node_us.extend(other.slow_node_us);
        self.rejected += other.rejected;
        self.failed += other.failed;
        self.worst_send_lag_us = self.worst_send_lag_us.max(other.worst_send_lag_us);
    }
}

impl std::fmt::Display for Scheduled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} admitted, {} refused, {} failed; the generator sent up to {:.0} us late",
            self.admitted_us.len(),
            self.rejected,
            self.failed,
            self.worst_send_lag_us
        )
    }
}

/// Open-loop load at `rate` for `length` over `connections` keep-alive connections, all on
/// one single-threaded runtime on the generator's core: one dispatcher sends request `k` at
/// `t0 + k / rate` on a connection with no request outstanding, to the microsecond, and a
/// reader per connection reads its answer. Unlike [`loadgen::drive`], a refusal keeps its
/// connection (the response was whole), so a node that refuses most requests does not make
/// the generator reconnect for each. An admitted request's latency runs from when it was
/// sent: what the node made it wait (its queue and its run). When no connection is free at
/// a request's time the dispatcher waits for one; the worst such lag is reported beside the
/// figures, so a generator that cannot offer the rate shows.
fn scheduled(
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
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            let (idle_tx, mut idle) = tokio::sync::mpsc::unbounded_channel::<usize>();
            let (mut writers, mut readers) = (Vec::new(), Vec::new());
            for i in 0..connections {
                let stream = tokio::net::TcpStream::connect(addr)
                    .await
                    .with_context(|| format!("connecting to {addr}"))?;
                stream.set_nodelay(true)?;
                let (read, write) = stream.into_split();
                let (sent_tx, sent_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
                writers.push((write, sent_tx));
                readers.push(tokio::spawn(read_answers(read, sent_rx, i, idle_tx.clone())));
                let _ = idle_tx.send(i);
            }
            drop(idle_tx);
            let t0 = Instant::now() + Duration::from_millis(50);
            let (mut lag, mut unsent) = (Duration::ZERO, 0);
            for k in 0..total {
                let due = t0 + interval.mul_f64(k as f64);
                until(due).await;
                // A connection with nothing outstanding (readers give theirs back when
                // answered; a broken one is not given back).
                let Some(i) = idle.recv().await else { break };
                lag = lag.max(due.elapsed());
                let (write, sent) = &mut writers[i];
                match write.write_all(&requests[k % requests.len()]).await {
                    Ok(()) => {
                        let _ = sent.send(Instant::now());
                    }
                    // The connection is left out, as after a failed read.
                    Err(_) => unsent += 1,
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
            drop(writes);
            Ok(all)
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

/// Reads connection `i`'s answers, one per request sent on it (`sent` says when), and gives
/// the connection back to `idle` after each; stops at the first error or timeout, leaving the
/// connection out.
async fn read_answers(
    mut read: tokio::net::tcp::OwnedReadHalf,
    mut sent: tokio::sync::mpsc::UnboundedReceiver<Instant>,
    i: usize,
    idle: tokio::sync::mpsc::UnboundedSender<usize>,
) -> Scheduled {
    let mut out = Scheduled::default();
    let mut buf = Vec::with_capacity(16 * 1024);
    while let Some(at) = sent.recv().await {
        buf.clear();
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
                let took = at.elapsed();
                out.admitted_us.push(took.as_secs_f64() * 1e6);
                if took > SLOW_ANSWER && out.slow_node_us.len() < RECEIPTS_READ {
                    // A sample, so that parsing receipts takes little from the generator.
                    let receipt = serde_json::from_slice::<serde_json::Value>(&buf[body]).ok();
                    let total =
                        receipt.as_ref().and_then(|v| v["parameters"]["timings_us"]["total"].as_f64());
                    out.slow_node_us.extend(total);
                }
            }
            Ok(Ok((429 | 503, _))) => out.rejected += 1,
            Ok(Ok(_)) => out.failed += 1,
            Ok(Err(_)) | Err(_) => {
                out.failed += 1;
                return out;
            }
        }
        let _ = idle.send(i);
    }
    out
}

/// Answers per second from `clients` blocking clients sending back to back for `length`.
fn capacity(
    addr: SocketAddr,
    requests: &Arc<Vec<Vec<u8>>>,
    clients: usize,
    length: Duration,
    cores: Cores,
) -> Result<f64> {
    let until = Instant::now() + length;
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
    Ok(answered as f64 / length.as_secs_f64())
}
