//! Too little of a good thing: thousands of clients that connect to an edge and then send
//! nothing, or next to nothing, beside normal traffic.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use edge_node::figures::percentile;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

use super::cores::{self, Cores, born_on_node_core, run_when_idle};
use super::overload::{BODIES, TIMEOUT};
use super::{Figure, Setup, loopback};
use crate::loadgen::{self, Load, Measured};
use crate::procfs::open_fds;

/// Drives `requests` at `rate` for `duration` over `connections` keep-alive connections.
fn drive(
    addr: SocketAddr,
    requests: &Arc<Vec<Vec<u8>>>,
    rate: f64,
    duration: Duration,
    connections: usize,
) -> Result<Measured> {
    loadgen::drive(&Load { addr, requests, rate, duration, connections, timeout: TIMEOUT, accept: |_| true })
}

/// Says on stderr how a rung of [`loadgen::drive`] went.
fn report(what: &str, round: usize, m: &Measured) {
    eprintln!(
        "faults: round {round}, {what}: {} answered, {} not{}",
        m.latencies_us.len(),
        m.errors,
        m.first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default()
    );
}

/// Slow connections held open against the edge.
const SLOW: usize = 2000;

/// `faults.slow_clients.*`: normal traffic at a moderate rate, alternately alone and beside
/// [`SLOW`] connections that send nothing, half a header, or a body a byte at a time
/// (reopened when the node closes them); the good traffic's p99 beside them over alone, with
/// the slow connections trickling in step (`good_p99_ratio`, the goal's figure) and spread
/// over the second (`spread_good_p99_ratio`: what the burst costs is the difference), and the
/// most file descriptors the edge held.
pub(super) fn slow_clients(s: &Setup, rt: &Runtime) -> Result<Vec<Figure>> {
    let (rounds, window) = s.pick((1, Duration::from_secs(3)), (3, Duration::from_secs(4)));
    let mut edge = s.edge(0.0)?;
    // Room for every slow connection and the good ones: what is measured is what they cost
    // while held, not the refusal beyond the cap.
    edge.config.node.listeners.http_max_connections = 4096;
    let process = born_on_node_core(|| rt.block_on(s.start(&edge, "slow-edge")))?;
    let (addr, pid) = (loopback(edge.http), process.id());
    // As in the overload scenario: the node on one core, every client on the other, so that
    // what is measured is what the slow connections cost the node, not the CPU their own
    // client takes from it.
    let requests = s.requests(edge.http, BODIES);
    let cores = Cores::split(pid, "slow_clients");
    cores.run_here(|| {
        // The good client's threads (which inherit it) in the real-time class where allowed,
        // as the overload generator: the machine's own agents took its core for 2-5 ms at a
        // time, and its p99 alone and beside the slow clients measured them, not the node.
        // The slow clients and the fd sampler put themselves in the idle class.
        cores::run_first(|| slow_rounds(addr, pid, &requests, rounds, window))
    })
}

/// The slow-clients rounds against the node at `addr` (process `pid`).
fn slow_rounds(
    addr: SocketAddr,
    pid: u32,
    requests: &Arc<Vec<Vec<u8>>>,
    rounds: usize,
    window: Duration,
) -> Result<Vec<Figure>> {
    let rate = 300.0;
    let (mut alone, mut peak_fds) = (Vec::new(), 0usize);
    // Beside slow clients trickling in step, and beside the same clients spread over the
    // second (each phase its own round, so both are compared with the same baseline).
    let (mut in_step, mut spread) = (Vec::new(), Vec::new());
    // Warm the node and the connections.
    drive(addr, requests, rate, Duration::from_millis(500), 8)?;
    for round in 0..rounds {
        // The same sampler runs alone and beside the slow clients, so both pay for it.
        let sampler = FdSampler::start(pid);
        let quiet = drive(addr, requests, rate, window, 8);
        sampler.stop();
        let quiet = quiet?;
        report("alone", round, &quiet);
        alone.extend(quiet.latencies_us);

        for (phases, latencies) in [(Phases::InStep, &mut in_step), (Phases::Spread, &mut spread)] {
            let pool = SlowPool::start(addr, phases)?;
            pool.wait_open(SLOW, Duration::from_secs(10));
            // Let the node settle after accepting them all.
            std::thread::sleep(Duration::from_millis(500));
            let sampler = FdSampler::start(pid);
            let busy = drive(addr, requests, rate, window, 8);
            let (peak, opened, reopened) = (sampler.stop(), pool.open(), pool.stop()?);
            let busy = busy?;
            eprintln!(
                "faults.slow_clients: round {round}, {phases:?}: {opened} slow connections open at the end, {reopened} reopened; edge held up to {peak} fds"
            );
            report(&format!("beside slow clients {phases:?}"), round, &busy);
            peak_fds = peak_fds.max(peak);
            latencies.extend(busy.latencies_us);
        }
    }
    anyhow::ensure!(
        !alone.is_empty() && !in_step.is_empty() && !spread.is_empty(),
        "no good answer to measure"
    );
    let p_alone = percentile(&mut alone, 0.99);
    let (p_in_step, p_spread) = (percentile(&mut in_step, 0.99), percentile(&mut spread, 0.99));
    eprintln!(
        "faults.slow_clients: good p99 {p_in_step:.0} us beside slow clients in step, {p_spread:.0} us beside them spread, {p_alone:.0} us alone"
    );
    Ok(vec![
        ("faults.slow_clients.good_p99_ratio", p_in_step / p_alone, "ratio"),
        ("faults.slow_clients.spread_good_p99_ratio", p_spread / p_alone, "ratio"),
        ("faults.slow_clients.peak_fds", peak_fds as f64, "count"),
    ])
}

/// Samples a process's open file descriptors every 100 ms on a thread of its own, in the idle
/// scheduling class.
struct FdSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<usize>,
}

impl FdSampler {
    fn start(pid: u32) -> FdSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            // Listing 2,000 descriptors in `/proc` takes the good client's core for a
            // moment ten times a second; in the idle class the listing waits for the client.
            run_when_idle();
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(open_fds(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(100));
            }
            peak
        });
        FdSampler { stop, thread }
    }

    /// The most descriptors seen.
    fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// [`SLOW`] misbehaving connections, each reopened when the node closes it, on a thread and
/// runtime of their own until stopped.
struct SlowPool {
    stop: Arc<AtomicBool>,
    open: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<Result<usize>>,
}

impl SlowPool {
    fn start(addr: SocketAddr, phases: Phases) -> Result<SlowPool> {
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(AtomicUsize::new(0));
        let (flag, count) = (stop.clone(), open.clone());
        let thread =
            std::thread::Builder::new().name("slow-clients".into()).spawn(move || -> Result<usize> {
                // The slow clients stand for machines elsewhere; here they share the good
                // client's core, and their wake-ups (a trickled byte a second from each of
                // a thousand, reconnections) would delay its sends and reads, which the
                // good p99 would charge to the node. In the idle class they run only when
                // the good client is not ready to.
                if !run_when_idle() {
                    eprintln!("faults.slow_clients: could not give the slow clients the idle class; they compete with the good client for its core");
                }
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                rt.block_on(async move {
                    let tasks: Vec<_> = (0..SLOW)
                        .map(|i| {
                            tokio::spawn(slow_connection(addr, Kind::of(i), phases.of(i), flag.clone(), count.clone()))
                        })
                        .collect();
                    let mut reopened = 0;
                    for t in tasks {
                        reopened += t.await.context("a slow client panicked")?;
                    }
                    Ok(reopened)
                })
            })?;
        Ok(SlowPool { stop, open, thread })
    }

    /// Connections open now.
    fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Waits until `n` connections are open, or `limit` passed.
    fn wait_open(&self, n: usize, limit: Duration) {
        let start = Instant::now();
        while self.open() < n && start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "faults.slow_clients: {} slow connections open after {:.1} s",
            self.open(),
            start.elapsed().as_secs_f64()
        );
    }

    /// Closes every connection; returns how many times the node closed one first.
    fn stop(self) -> Result<usize> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().map_err(|_| anyhow::anyhow!("the slow-client thread panicked"))?
    }
}

/// When in the second the slow connections trickle.
#[derive(Debug, Clone, Copy)]
enum Phases {
    /// All at once: they open within milliseconds and each trickles a second after its
    /// last byte, so the node reads a thousand bytes in one burst a second (the worst case,
    /// and an attacker's choice).
    InStep,
    /// Each from its own point in the second, as clients elsewhere would.
    Spread,
}

impl Phases {
    /// How long connection `i` waits before it opens.
    fn of(self, i: usize) -> Duration {
        match self {
            Phases::InStep => Duration::ZERO,
            // 617 is prime to 1000: the thousand connections of each kind take distinct
            // milliseconds.
            Phases::Spread => Duration::from_millis((i as u64 * 617) % 1000),
        }
    }
}

/// What a slow connection does once connected.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Sends nothing.
    Idle,
    /// Sends half a request head, then one more header byte a second.
    HalfHeader,
    /// Sends a whole head announcing a body, then one body byte a second.
    TrickledBody,
}

impl Kind {
    /// Half idle, a quarter each of the others.
    fn of(i: usize) -> Kind {
        match i % 4 {
            0 | 1 => Kind::Idle,
            2 => Kind::HalfHeader,
            _ => Kind::TrickledBody,
        }
    }

    fn opening(self) -> &'static [u8] {
        match self {
            Kind::Idle => b"",
            Kind::HalfHeader => b"POST /v2/models/digits/infer HTTP/1.1\r\nhost: edge\r\nx-slow: ",
            Kind::TrickledBody => {
                b"POST /v2/models/digits/infer HTTP/1.1\r\nhost: edge\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n{"
            }
        }
    }
}

/// One slow connection, reopened each time the node closes it, until `stop`. Returns the
/// number of reopenings.
async fn slow_connection(
    addr: SocketAddr,
    kind: Kind,
    delay: Duration,
    stop: Arc<AtomicBool>,
    open: Arc<AtomicUsize>,
) -> usize {
    tokio::time::sleep(delay).await;
    let mut reopened = 0;
    let mut first = true;
    while !stop.load(Ordering::Relaxed) {
        if !first {
            reopened += 1;
        }
        first = false;
        let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if stream.write_all(kind.opening()).await.is_err() {
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        hold(&mut stream, kind, &stop).await;
        open.fetch_sub(1, Ordering::Relaxed);
    }
    reopened
}

/// Keeps `stream` open, trickling as `kind` says, until the node closes it or `stop`.
async fn hold(stream: &mut tokio::net::TcpStream, kind: Kind, stop: &AtomicBool) {
    let mut buf = [0u8; 1024];
    while !stop.load(Ordering::Relaxed) {
        tokio::select! {
            read = stream.read(&mut buf) => {
                if matches!(read, Ok(0) | Err(_)) {
                    return;
                }
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                let byte: &[u8] = match kind {
                    Kind::Idle => b"",
                    Kind::HalfHeader => b"x",
                    Kind::TrickledBody => b" ",
                };
                if !byte.is_empty() && stream.write_all(byte).await.is_err() {
                    return;
                }
            }
        }
    }
}
