//! Too much of a good thing and too little of it: 3x the capacity of an edge, and thousands
//! of clients that connect and then send nothing, or next to nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use edge_node::figures::percentile;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

use super::{Figure, Setup, loopback};
use crate::loadgen::{self, Conn, Load, Measured};
use crate::procfs::{open_fds, peak_rss_mib};

/// The route's bulkhead in the overload scenario, sized for the one core the node gets: one
/// request runs and one waits, so the core never idles between answers; beyond that the
/// node refuses (503) before reading the body. A CPU-bound plugin gains nothing from running
/// two at once on one core: each takes twice as long. The sizes compared are in
/// docs/performance.md, "Overload bulkhead".
const IN_FLIGHT: u32 = 1;
const QUEUE: u32 = 1;

/// Connections offering the 3x load.
const STORM_CONNECTIONS: usize = 64;

/// How long a client waits for an answer before counting it as failed.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Distinct requests the load cycles through.
const BODIES: usize = 2000;

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
    Ok(vec![
        ("faults.overload.admitted_p99_ratio", storm_p99 / calm_p99, "ratio"),
        ("faults.overload.rejected_share", loaded.rejected as f64 / loaded.sent().max(1) as f64, "fraction"),
        ("faults.overload.peak_rss_mib", peak_rss_mib(process.id())?, "MiB"),
    ])
}

/// Which core the load generator's threads run on, once the node has the other.
#[derive(Debug, Clone, Copy)]
struct Cores {
    generator: Option<usize>,
}

impl Cores {
    /// Moves every thread of process `pid` to the last core this process may use, and
    /// keeps the first for the generator; with fewer than two cores, or where affinity
    /// cannot be set, leaves both where they are and says so.
    fn split(pid: u32, scenario: &str) -> Cores {
        let allowed = allowed_cores();
        let (Some(&first), Some(&last)) = (allowed.first(), allowed.last()) else {
            eprintln!("faults.{scenario}: cannot read this process's cores; node and generator share them");
            return Cores { generator: None };
        };
        if first == last {
            eprintln!("faults.{scenario}: one core only; node and generator share it");
            return Cores { generator: None };
        }
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.flatten().collect::<Vec<_>>());
        let moved = tasks.map(|tasks| {
            tasks.iter().filter_map(|t| t.file_name().to_str()?.parse::<i32>().ok()).all(|tid| pin(tid, last))
        });
        if moved.unwrap_or(false) {
            eprintln!("faults.{scenario}: the node runs on core {last}, the generators on core {first}");
            Cores { generator: Some(first) }
        } else {
            eprintln!(
                "faults.{scenario}: could not pin the node's threads; node and generator share the cores"
            );
            Cores { generator: None }
        }
    }

    /// Pins the calling thread to the generator's core, if there is one.
    fn enter(self) {
        if let Some(core) = self.generator {
            pin(0, core);
        }
    }

    /// Runs `f` with the calling thread on the generator's core, and every thread `f`
    /// starts too (threads inherit their creator's cores); then gives the thread back the
    /// cores it had.
    fn run_here<T>(self, f: impl FnOnce() -> T) -> T {
        let Some(core) = self.generator else { return f() };
        let had = allowed_cores();
        pin(0, core);
        let out = f();
        pin_to(0, &had);
        out
    }
}

/// Runs `f`, which starts the node, with this thread on the core [`Cores::split`] gives the
/// node, so that the node is born on one core and sizes itself for one (tokio's workers come
/// from `available_parallelism`), as a node given one core by its service manager or
/// container would. Moved there after it started, its two workers would time-share the core
/// and an admitted request would wait out the other worker's time slice.
fn born_on_node_core<T>(f: impl FnOnce() -> T) -> T {
    let had = allowed_cores();
    match had.last() {
        Some(&last) if had.len() > 1 && pin(0, last) => {
            let out = f();
            pin_to(0, &had);
            out
        }
        _ => f(),
    }
}

/// The cores this process may run on.
fn allowed_cores() -> Vec<usize> {
    // SAFETY: sched_getaffinity writes into the one cpu_set_t passed, of the size given.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect()
    }
}

/// Pins thread `tid` (0: the calling thread) to `core`; whether that worked.
fn pin(tid: i32, core: usize) -> bool {
    pin_to(tid, &[core])
}

/// Puts the calling thread in Linux's `SCHED_IDLE` class: it runs only when no other thread
/// of its core is ready to. Whether that worked.
fn run_when_idle() -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: 0 names the calling thread; `param` is an initialised sched_param, which
    // SCHED_IDLE requires to hold priority 0.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) == 0 }
}

/// Lets thread `tid` (0: the calling thread) run on `cores` only; whether that worked.
fn pin_to(tid: i32, cores: &[usize]) -> bool {
    // SAFETY: the set is built here and passed with its size; sched_setaffinity changes
    // only the scheduling of thread `tid`.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &core in cores {
            libc::CPU_SET(core, &mut set);
        }
        libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// What [`scheduled`] measured.
#[derive(Debug, Default)]
struct Scheduled {
    /// Latencies of the 200 answers, µs from each request's scheduled time.
    admitted_us: Vec<f64>,
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
                    return Ok::<u16, anyhow::Error>(f.status);
                }
                buf.reserve(16 * 1024);
                if read.read_buf(&mut buf).await? == 0 {
                    anyhow::bail!("closed");
                }
            }
        })
        .await;
        match answer {
            Ok(Ok(200)) => out.admitted_us.push(at.elapsed().as_secs_f64() * 1e6),
            Ok(Ok(429 | 503)) => out.rejected += 1,
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

/// Says on stderr how a rung of [`loadgen::drive`] went.
fn report(what: &str, round: usize, m: &Measured) {
    eprintln!(
        "faults: round {round}, {what}: {} answered, {} not{}",
        m.latencies_us.len(),
        m.errors,
        m.first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default()
    );
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
    cores.run_here(|| slow_rounds(addr, pid, &requests, rounds, window))
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
