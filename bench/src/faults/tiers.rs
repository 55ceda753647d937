//! Faults between the tiers: the central killed and restarted, clients that hang up during
//! escalations and probes, and a lossy, slow network between the tiers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use edge_node::figures::percentile;
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::runtime::Runtime;

use super::link::{Impairment, Relay};
use super::{Figure, INFER_PATH, Node, Outcome, Setup, http_client, infer, loopback, metric, metrics_text};

/// The edge's `normal` threshold where a good share of the test images escalates (the edge
/// model is at least this sure of most of them, not of all).
const ESCALATING_THRESHOLD: f64 = 0.995;

/// Closed-loop HTTP clients driving the edge in the tier scenarios.
const CLIENTS: usize = 8;

/// Longest wait for the first escalated answer after the central restarts.
const RECOVERY_LIMIT: Duration = Duration::from_secs(20);

/// Every answer the clients got, with when it arrived.
type Answers = Arc<Mutex<Vec<(Instant, Outcome)>>>;

/// Starts [`CLIENTS`] closed-loop clients cycling through the test images against `edge`
/// until `stop` is set; each answer goes into the returned log.
fn drive(
    s: &Setup,
    edge: &Node,
    stop: &Arc<AtomicBool>,
) -> Result<(Answers, Vec<tokio::task::JoinHandle<()>>)> {
    let answers: Answers = Arc::default();
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new((0..s.test.len()).map(|i| s.body(i)).collect());
    let url = Arc::new(edge.url(INFER_PATH));
    let mut workers = Vec::new();
    for w in 0..CLIENTS {
        let (client, url, bodies, stop, answers) =
            (http_client()?, url.clone(), bodies.clone(), stop.clone(), answers.clone());
        workers.push(tokio::spawn(async move {
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                let outcome = infer(&client, &url, bodies[i % bodies.len()].clone()).await;
                answers.lock().push((Instant::now(), outcome));
                i += CLIENTS;
            }
        }));
    }
    Ok((answers, workers))
}

/// `faults.central_kill.*`: traffic to an edge that escalates a good share while the central
/// is SIGKILLed, then restarted on the same ports ~2 s later.
pub(super) fn central_kill(s: &Setup, rt: &Runtime) -> Result<Vec<Figure>> {
    let (before, down, tail) = s.pick(
        (Duration::from_secs(2), Duration::from_secs(2), Duration::from_secs(1)),
        (Duration::from_secs(4), Duration::from_secs(2), Duration::from_secs(2)),
    );
    rt.block_on(async {
        let central = s.central()?;
        let mut edge = s.edge(ESCALATING_THRESHOLD)?;
        s.escalate(&mut edge, &central)?;
        let mut central_process = s.start(&central, "kill-central").await?;
        let _edge_process = s.start(&edge, "kill-edge").await?;

        let stop = Arc::new(AtomicBool::new(false));
        let (answers, workers) = drive(s, &edge, &stop)?;
        tokio::time::sleep(before).await;
        let escalated_share = share(&answers.lock(), Outcome::Escalated);
        eprintln!(
            "faults.central_kill: {:.1}% of answers escalated before the kill",
            escalated_share * 100.0
        );
        central_process.kill();
        tokio::time::sleep(down).await;
        // Same config, same ports: as a supervisor restarting a crashed process would.
        let restarted_at = Instant::now();
        let mut restarted = s.spawn(&central, "kill-central-restarted")?;
        restarted.wait_ready(&http_client()?, central.http).await?;
        eprintln!(
            "faults.central_kill: the restarted central was ready after {:.2} s",
            restarted_at.elapsed().as_secs_f64()
        );
        let recovered_at =
            wait_for(&answers, restarted_at, RECOVERY_LIMIT, |o| o == Outcome::Escalated).await;
        tokio::time::sleep(tail).await;
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.await.context("a client task panicked")?;
        }
        let answers = answers.lock();
        let count = |o: Outcome| answers.iter().filter(|(_, a)| *a == o).count() as f64;
        eprintln!(
            "faults.central_kill: {} answers: {} local, {} escalated, {} degraded, {} failed",
            answers.len(),
            count(Outcome::Local),
            count(Outcome::Escalated),
            count(Outcome::Degraded),
            count(Outcome::Failed)
        );
        let recovery_s = match recovered_at {
            Some(t) => (t - restarted_at).as_secs_f64(),
            None => {
                eprintln!(
                    "faults.central_kill: no escalated answer within {RECOVERY_LIMIT:?} of the restart: \
                     recovery_s is that limit, a lower bound"
                );
                RECOVERY_LIMIT.as_secs_f64()
            }
        };
        Ok(vec![
            ("faults.central_kill.failed_requests", count(Outcome::Failed), "count"),
            ("faults.central_kill.degraded_answers", count(Outcome::Degraded), "count"),
            ("faults.central_kill.recovery_s", recovery_s, "s"),
        ])
    })
}

/// The share of `answers` that came out as `outcome`.
fn share(answers: &[(Instant, Outcome)], outcome: Outcome) -> f64 {
    answers.iter().filter(|(_, o)| *o == outcome).count() as f64 / answers.len().max(1) as f64
}

/// Waits (up to `limit`) for the first answer after `since` that `wanted` accepts, and
/// returns when it arrived.
async fn wait_for(
    answers: &Answers,
    since: Instant,
    limit: Duration,
    wanted: impl Fn(Outcome) -> bool,
) -> Option<Instant> {
    while since.elapsed() < limit {
        let first = answers.lock().iter().filter(|(t, o)| *t > since && wanted(*o)).map(|(t, _)| *t).min();
        if first.is_some() {
            return first;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Clients that hang up, at once.
const CANCELLERS: usize = 32;

/// `faults.cancel_storm.stuck_breakers`: clients hang up during escalations while the central
/// is stalled (SIGSTOP), then dead (SIGKILL), and so during the breaker's half-open probes;
/// then the central comes back. 10 s later, every upstream whose breaker is not closed, or
/// to which escalations still fail, is stuck.
pub(super) fn cancel_storm(s: &Setup, rt: &Runtime) -> Result<Vec<Figure>> {
    let storm = s.pick(Duration::from_secs(3), Duration::from_secs(5));
    rt.block_on(async {
        let central = s.central()?;
        // Every answer escalates (the edge model is never surer than 1).
        let mut edge = s.edge(1.0)?;
        s.escalate(&mut edge, &central)?;
        let mut central_process = s.start(&central, "storm-central").await?;
        let _edge_process = s.start(&edge, "storm-edge").await?;
        let client = http_client()?;
        let url = edge.url(INFER_PATH);
        let warm = probe(&client, &url, s, 10).await;
        if warm.escalated == 0 {
            bail!("no request escalated before the storm ({warm:?}); the scenario needs escalations");
        }

        super::signal(central_process.id(), libc::SIGSTOP)?;
        eprintln!("faults.cancel_storm: central stalled (SIGSTOP); clients hang up mid-escalation");
        let stalled = hang_ups(s, &edge, storm).await?;
        central_process.kill();
        eprintln!("faults.cancel_storm: central dead (SIGKILL); clients hang up mid-escalation");
        let dead = hang_ups(s, &edge, storm).await?;
        eprintln!("faults.cancel_storm: {} requests cut off", stalled + dead);

        let _restarted = s.start(&central, "storm-central-restarted").await?;
        let recovered = Instant::now();
        // Patient traffic for 10 s: a breaker that works closes again within it.
        let mut settle = Probe::default();
        while recovered.elapsed() < Duration::from_secs(10) {
            settle.add(probe(&client, &url, s, 1).await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let last = probe(&client, &url, s, 20).await;
        let text = metrics_text(&edge).await?;
        let open_breakers = breakers_not_closed(&text);
        let breaker_open =
            metric(&text, "cascade_degraded_total", &["reason=\"breaker_open\""]).unwrap_or(0.0);
        eprintln!(
            "faults.cancel_storm: after recovery: settling {settle:?}; final {last:?}; breakers not closed: \
             {open_breakers}; degraded as breaker_open over the run: {breaker_open}"
        );
        // One upstream here: stuck if its breaker is not closed or escalations still fail.
        let escalations_fail = last.escalated == 0 && last.degraded > 0;
        let stuck = open_breakers.max(usize::from(escalations_fail));
        Ok(vec![("faults.cancel_storm.stuck_breakers", stuck as f64, "count")])
    })
}

/// How a run of sequential requests ended.
#[derive(Debug, Default, Clone, Copy)]
struct Probe {
    escalated: usize,
    degraded: usize,
    local: usize,
    failed: usize,
}

impl Probe {
    fn add(&mut self, other: Probe) {
        self.escalated += other.escalated;
        self.degraded += other.degraded;
        self.local += other.local;
        self.failed += other.failed;
    }
}

/// Sends `n` requests one after another and counts how they ended.
async fn probe(client: &reqwest::Client, url: &str, s: &Setup, n: usize) -> Probe {
    let mut p = Probe::default();
    for i in 0..n {
        match infer(client, url, s.body(i)).await {
            Outcome::Escalated => p.escalated += 1,
            Outcome::Degraded => p.degraded += 1,
            Outcome::Local => p.local += 1,
            Outcome::Failed => p.failed += 1,
        }
    }
    p
}

/// Upstreams whose breaker gauge (`cascade_upstream_breaker`: 0 closed, 1 half-open, 2
/// open) is not 0.
fn breakers_not_closed(metrics: &str) -> usize {
    metrics
        .lines()
        .filter(|l| l.starts_with("cascade_upstream_breaker{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .filter(|v| *v != 0.0)
        .count()
}

/// For `length`, keeps [`CANCELLERS`] clients busy sending a request to `edge` and closing
/// the connection 5–400 ms later, before the escalation can end (its timeout is 1 s), with
/// two patient clients beside them whose escalations fail and so open the breaker. Returns
/// how many requests were cut off.
async fn hang_ups(s: &Setup, edge: &Node, length: Duration) -> Result<usize> {
    let until = Instant::now() + length;
    let requests = s.requests(edge.http, 64);
    let mut tasks = Vec::new();
    for c in 0..CANCELLERS {
        let (requests, addr) = (requests.clone(), loopback(edge.http));
        tasks.push(tokio::spawn(async move {
            let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (c as u64 + 1);
            let mut cut = 0;
            while Instant::now() < until {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                if stream.write_all(&requests[rng as usize % requests.len()]).await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(5 + rng % 395)).await;
                    cut += 1;
                }
                // Dropping the stream closes the connection with the request unanswered.
            }
            cut
        }));
    }
    let url = edge.url(INFER_PATH);
    for _ in 0..2 {
        let (client, url) = (http_client()?, url.clone());
        let body = s.body(3);
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                infer(&client, &url, body.clone()).await;
            }
            0
        }));
    }
    let mut cut = 0;
    for t in tasks {
        cut += t.await.context("a hang-up client panicked")?;
    }
    Ok(cut)
}

/// `faults.netem.escalated_p99_us`: escalations across a link with delay and loss
/// ([`LINK`]), made with `tc netem` in a network namespace of this suite's own where the
/// machine allows it, else by a user-space UDP relay between the tiers (the same delays and
/// drops, applied in this process instead of the kernel).
pub(super) fn netem(s: &Setup, _rt: &Runtime) -> Result<Vec<Figure>> {
    let duration = s.pick(Duration::from_secs(3), Duration::from_secs(8));
    let latencies = match netem_available() {
        Ok(()) => across_netem(s, duration)?,
        Err(why) => {
            eprintln!("faults.netem: no netem here ({why:#}); the link is a user-space UDP relay instead");
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(escalate_across(s, &s.program, duration, Via::Relay))?
        }
    };
    let mut latencies = latencies;
    anyhow::ensure!(!latencies.is_empty(), "no escalated answer across the impaired link");
    Ok(vec![("faults.netem.escalated_p99_us", percentile(&mut latencies, 0.99), "us")])
}

/// Delay and loss applied to the UDP (QUIC) packets between the tiers, each way.
const LINK: Impairment =
    Impairment { delay: Duration::from_millis(5), jitter: Duration::from_millis(1), loss: 0.01 };

/// The escalated latencies across a namespace's loopback shaped by `tc netem`.
fn across_netem(s: &Setup, duration: Duration) -> Result<Vec<f64>> {
    let namespace = Namespace::create()?;
    namespace.shape_udp()?;
    let wrapper = namespace.wrapper(s)?;
    let ns = namespace.name.clone();
    // Sockets belong to the network namespace of the thread that makes them: the clients run
    // on a thread that has entered the namespace, on a runtime of its own.
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<Vec<f64>> {
                enter_namespace(&ns)?;
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                rt.block_on(escalate_across(s, &wrapper, duration, Via::Direct))
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the netem client thread panicked"))?
    })
}

/// Fails, saying why, unless a fresh network namespace can be made and given a netem qdisc.
fn netem_available() -> Result<()> {
    let script =
        format!("ip link set lo up && tc qdisc add dev lo root netem {}", LINK.netem_args().join(" "));
    let out = std::process::Command::new("unshare")
        .args(["-n", "sh", "-c", &script])
        .output()
        .context("running `unshare -n` (util-linux)")?;
    if !out.status.success() {
        bail!(
            "`unshare -n sh -c '{script}'` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A named network namespace (`ip netns`), deleted when dropped.
struct Namespace {
    name: String,
}

impl Namespace {
    fn create() -> Result<Namespace> {
        let name = format!("cascade-faults-{}", std::process::id());
        run_ip(&["netns", "add", &name])?;
        let ns = Namespace { name };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Runs `command` inside the namespace.
    fn exec(&self, command: &[&str]) -> Result<()> {
        let mut args = vec!["netns", "exec", self.name.as_str()];
        args.extend_from_slice(command);
        run_ip(&args)
    }

    /// Delays and drops UDP on the namespace's loopback ([`LINK`]), leaving TCP (the HTTP
    /// clients) alone: a prio qdisc whose third band is netem, and a filter sending UDP there.
    fn shape_udp(&self) -> Result<()> {
        self.exec(&["tc", "qdisc", "add", "dev", "lo", "root", "handle", "1:", "prio"])?;
        let mut netem = vec!["tc", "qdisc", "add", "dev", "lo", "parent", "1:3", "handle", "30:", "netem"];
        let args = LINK.netem_args();
        netem.extend(args.iter().map(String::as_str));
        self.exec(&netem)?;
        self.exec(&[
            "tc", "filter", "add", "dev", "lo", "parent", "1:0", "protocol", "ip", "prio", "1", "u32",
            "match", "ip", "protocol", "17", "0xff", "flowid", "1:3",
        ])
    }

    /// A script that runs `edge-node` inside the namespace, for `NodeProcess::start`.
    fn wrapper(&self, s: &Setup) -> Result<std::path::PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let path = s.dir().join("edge-node-in-netns");
        let script =
            format!("#!/bin/sh\nexec ip netns exec {} '{}' \"$@\"\n", self.name, s.program.display());
        std::fs::write(&path, script)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        Ok(path)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = run_ip(&["netns", "del", &self.name]);
    }
}

fn run_ip(args: &[&str]) -> Result<()> {
    let out = std::process::Command::new("ip").args(args).output().context("running `ip`")?;
    anyhow::ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Moves the calling thread into network namespace `name`.
fn enter_namespace(name: &str) -> Result<()> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(format!("/run/netns/{name}"))
        .with_context(|| format!("opening namespace {name}"))?;
    // SAFETY: setns takes a file descriptor we hold open and a flag; it changes only this
    // thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    anyhow::ensure!(rc == 0, "setns into {name}: {}", std::io::Error::last_os_error());
    Ok(())
}

/// How the edge's escalations reach the central.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// Straight to its QUIC port (the link itself is shaped).
    Direct,
    /// Through a [`Relay`] that impairs them as [`LINK`] says.
    Relay,
}

/// Starts a central and an edge with `program` (the node, or a script that runs it inside a
/// namespace), the escalations going `via`; drives the edge with every request escalating
/// for `duration`, and returns the escalated answers' latencies in µs.
async fn escalate_across(
    s: &Setup,
    program: &std::path::Path,
    duration: Duration,
    via: Via,
) -> Result<Vec<f64>> {
    let central = s.central()?;
    let mut edge = s.edge(1.0)?;
    let quic = loopback(central.quic.context("the central node has no QUIC listener")?);
    let relay = match via {
        Via::Direct => None,
        Via::Relay => Some(Relay::start(quic, LINK, 0x5eed)?),
    };
    s.escalate_to(&mut edge, relay.as_ref().map_or(quic, Relay::addr));
    let client = http_client()?;
    let mut processes = Vec::new();
    for (node, name) in [(&central, "netem-central"), (&edge, "netem-edge")] {
        let file = edge_node::deployment::write_config(&node.config, s.dir())?;
        let mut p = edge_node::deployment::NodeProcess::start(program, name, &file, s.dir())?;
        p.wait_ready(&client, node.http).await?;
        processes.push(p);
    }
    let url = edge.url(INFER_PATH);
    let until = Instant::now() + duration;
    let mut tasks = Vec::new();
    for w in 0..4 {
        let (client, url, bodies) =
            (client.clone(), url.clone(), (0..64).map(|i| s.body(w * 64 + i)).collect::<Vec<_>>());
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut other) = (Vec::new(), Vec::new());
            let mut i = 0;
            while Instant::now() < until {
                let start = Instant::now();
                match infer(&client, &url, bodies[i % bodies.len()].clone()).await {
                    Outcome::Escalated => latencies.push(start.elapsed().as_secs_f64() * 1e6),
                    outcome => other.push(outcome),
                }
                i += 1;
            }
            (latencies, other)
        }));
    }
    let (mut all, mut other) = (Vec::new(), Vec::new());
    for t in tasks {
        let (l, o) = t.await?;
        all.extend(l);
        other.extend(o);
    }
    let count = |kind: Outcome| other.iter().filter(|&&o| o == kind).count();
    eprintln!(
        "faults.netem: {} escalated answers; {} degraded, {} local, {} failed",
        all.len(),
        count(Outcome::Degraded),
        count(Outcome::Local),
        count(Outcome::Failed)
    );
    drop(processes);
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breakers_not_closed_are_counted() {
        let text = "cascade_upstream_breaker{upstream=\"a\"} 0\ncascade_upstream_breaker{upstream=\"b\"} 1\n\
                    cascade_upstream_breaker{upstream=\"c\"} 2\n";
        assert_eq!(breakers_not_closed(text), 2);
        assert_eq!(metric(text, "cascade_upstream_breaker", &["upstream=\"c\""]), Some(2.0));
    }
}
