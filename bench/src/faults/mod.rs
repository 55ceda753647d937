//! `cascade-bench faults`: what a bad day or a hostile peer does to a node (issue 14), as
//! figures.
//!
//! Every scenario runs real `edge-node serve` processes on loopback (or, for `netem`, in a
//! network namespace this suite creates, or behind a user-space relay where the kernel has
//! no netem), with bounded loops and timeouts:
//!
//! - [`tiers::central_kill`]: the central is SIGKILLed mid-run and restarted on its ports;
//!   `faults.central_kill.failed_requests`, `.degraded_answers`, `.recovery_s`;
//! - [`tiers::cancel_storm`]: clients hang up during escalations to a stalled, then dead,
//!   central and during half-open probes; `faults.cancel_storm.stuck_breakers`;
//! - [`tiers::netem`]: delay and loss between tiers with `tc netem` (or [`link::Relay`]);
//!   `faults.netem.escalated_p99_us`;
//! - [`overload::overload`]: 3x the measured capacity; `faults.overload.admitted_p99_ratio`,
//!   `.rejected_share`, `.peak_rss_mib`;
//! - [`slow_clients::slow_clients`]: 2,000 idle or trickling connections beside normal traffic;
//!   `faults.slow_clients.good_p99_ratio`, `.peak_fds`;
//! - [`hostile::peer_flood`]: one authenticated edge fills every QUIC stream it may with
//!   trickled maximal frames; `faults.peer_flood.central_peak_rss_mib`;
//! - [`hostile::hostile_plugins`]: the hostile test plugin beside good traffic;
//!   `faults.hostile.good_error_rate`;
//! - [`hostile::reload`]: config reloads and a plugin hot swap under load;
//!   `faults.reload.dropped_requests`.
//!
//! A scenario that cannot run says why on stderr and prints none of its figures; a goal
//! missed is printed like any other figure.

mod cores;
mod hostile;
mod link;
mod overload;
mod overload_plot;
mod slow_clients;
mod tiers;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use cascade_runtime::reference::ReferenceNode;
use cascade_runtime::transport::certs::Role;
use cascade_runtime::{Digits, ReferenceModel, Split};
use edge_node::deployment::{CENTRAL, Certs, NodeProcess, free_tcp_port, free_udp_port, write_config};
use edge_node::figures::Figures;
use serde_json::Value;

/// The certificate name of the edge that floods the central tier (role `edge`).
const FLOODER: &str = "flooder";

/// The inference path of the reference route.
const INFER_PATH: &str = "/v2/models/digits/infer";

/// A figure as a scenario returns it: name, value, unit.
type Figure = (&'static str, f64, &'static str);

/// What every scenario shares: certificates, plugins, the `edge-node` binary, test images.
pub(crate) struct Setup {
    dir: tempfile::TempDir,
    certs: Certs,
    /// `examples/mnist-classifier`, built.
    mnist: PathBuf,
    /// The crate of the hostile test plugin (`runtime/tests/plugins/hostile`).
    hostile_crate: PathBuf,
    program: PathBuf,
    models_dir: PathBuf,
    test: Digits,
    quick: bool,
    /// Where scenarios with a picture draw it (`--plot`).
    plot: Option<PathBuf>,
}

/// Runs every scenario (or those named in `only`) and returns the figures of those that
/// could run.
pub(crate) fn run(
    models_dir: &Path,
    plugin_crate: &Path,
    quick: bool,
    only: &[String],
    plot: Option<&Path>,
) -> Result<Figures> {
    raise_fd_limit();
    let mut setup = Setup::new(models_dir, plugin_crate, quick)?;
    if let Some(dir) = plot {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        setup.plot = Some(dir.to_owned());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut figures = Figures::default();
    type Scenario = fn(&Setup, &tokio::runtime::Runtime) -> Result<Vec<Figure>>;
    let scenarios: [(&str, Scenario); 8] = [
        ("central_kill", tiers::central_kill),
        ("cancel_storm", tiers::cancel_storm),
        ("netem", tiers::netem),
        ("overload", overload::overload),
        ("slow_clients", slow_clients::slow_clients),
        ("peer_flood", hostile::peer_flood),
        ("hostile", hostile::hostile_plugins),
        ("reload", hostile::reload),
    ];
    if let Some(unknown) = only.iter().find(|o| !scenarios.iter().any(|(name, _)| name == o)) {
        anyhow::bail!("--only: no scenario `{unknown}`");
    }
    for (name, scenario) in scenarios {
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        eprintln!("faults.{name}: starting");
        let started = std::time::Instant::now();
        // A scenario returns its figures once it has measured them all: one that fails
        // half-way adds none.
        match scenario(&setup, &runtime) {
            Ok(own) => own.into_iter().for_each(|(figure, value, unit)| figures.push(figure, value, unit)),
            Err(e) => eprintln!("faults.{name} skipped: {e:#}"),
        }
        eprintln!("faults.{name}: done in {:.1} s", started.elapsed().as_secs_f64());
    }
    Ok(figures)
}

impl Setup {
    fn new(models_dir: &Path, plugin_crate: &Path, quick: bool) -> Result<Setup> {
        let dir = tempfile::Builder::new().prefix("cascade-bench-faults-").tempdir()?;
        let certs = Certs::issue(
            &dir.path().join("certs"),
            &[(CENTRAL, Role::Central), ("edge", Role::Edge), (FLOODER, Role::Edge)],
        )?;
        let mnist = dir.path().join("mnist_classifier.wasm");
        edge_node::plugin_cmd::build(plugin_crate, &mnist, None)?;
        let test = Digits::load_split(models_dir, Split::Test)
            .with_context(|| format!("loading the test split from {}", models_dir.display()))?;
        let repo = crate::repository(models_dir);
        Ok(Setup {
            dir,
            certs,
            mnist,
            hostile_crate: repo.join("runtime/tests/plugins/hostile"),
            program: crate::node_program()?,
            models_dir: models_dir.to_path_buf(),
            test,
            quick,
            plot: None,
        })
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `quick` or `default`, as this run asks.
    fn pick<T>(&self, quick: T, default: T) -> T {
        if self.quick { quick } else { default }
    }

    /// A central node on fresh loopback ports: the central model, no cache, a fixed mode.
    fn central(&self) -> Result<Node> {
        let (http, quic) = (free_tcp_port()?, free_udp_port()?);
        let model = ReferenceModel::CentralFp32.path(&self.models_dir);
        let mut config = ReferenceNode::new(CENTRAL, &model, &self.mnist);
        config.node.listeners.http = format!("127.0.0.1:{http}");
        self.certs.listen_quic(&mut config, &format!("127.0.0.1:{quic}"));
        config.plugin.deadline_ms = 1000;
        config.route.cache_ttl_s = 0;
        config.node.modes.switching.automatic = false;
        Ok(Node { config, http, quic: Some(quic) })
    }

    /// An edge node named `edge` on a fresh HTTP port answering with the edge model: final
    /// below `threshold` only with an upstream, no cache, a fixed mode.
    fn edge(&self, threshold: f64) -> Result<Node> {
        let http = free_tcp_port()?;
        let model = ReferenceModel::EdgeInt8.path(&self.models_dir);
        let mut config = ReferenceNode::new("edge", &model, &self.mnist);
        config.node.listeners.http = format!("127.0.0.1:{http}");
        config.route.thresholds.normal = threshold;
        config.route.cache_ttl_s = 0;
        config.node.modes.switching.automatic = false;
        Ok(Node { config, http, quic: None })
    }

    /// Makes `edge` escalate to `central` over QUIC, with the demo's timings: 1 s per
    /// escalation, the breaker open for 1 s, an escalation budget that never binds.
    fn escalate(&self, edge: &mut Node, central: &Node) -> Result<()> {
        let quic = central.quic.context("the central node has no QUIC listener")?;
        self.escalate_to(edge, loopback(quic));
        Ok(())
    }

    /// [`Setup::escalate`] to whatever listens at `quic` (the central, or a relay before it).
    fn escalate_to(&self, edge: &mut Node, quic: std::net::SocketAddr) {
        self.certs.upstream_quic(&mut edge.config, &quic.to_string());
        if let Some(up) = edge.config.node.upstream.as_mut() {
            up.connect_timeout_ms = 500;
            up.request_timeout_ms = 1000;
            up.breaker.open_ms = 1000;
        }
        edge.config.node.modes.normal.escalation_budget_rps = Some(100_000.0);
    }

    /// Writes `node`'s config and starts it as process `log_name` (its log is
    /// `{log_name}.log`), without waiting for it.
    fn spawn(&self, node: &Node, log_name: &str) -> Result<NodeProcess> {
        let file = write_config(&node.config, self.dir())?;
        NodeProcess::start(&self.program, log_name, &file, self.dir())
    }

    /// [`Setup::spawn`], then waits until the node answers.
    async fn start(&self, node: &Node, log_name: &str) -> Result<NodeProcess> {
        let mut process = self.spawn(node, log_name)?;
        process.wait_ready(&http_client()?, node.http).await?;
        Ok(process)
    }

    /// The JSON body of a request for test image `i`.
    fn body(&self, i: usize) -> Vec<u8> {
        let i = i % self.test.len();
        let body = serde_json::json!({
            "inputs": [{ "name": "image", "shape": [28, 28], "datatype": "UINT8", "data": self.test.image(i) }]
        });
        body.to_string().into_bytes()
    }

    /// Requests for the first `n` test images, encoded for the load generator.
    fn requests(&self, port: u16, n: usize) -> std::sync::Arc<Vec<Vec<u8>>> {
        let addr = loopback(port);
        std::sync::Arc::new(
            (0..n).map(|i| crate::loadgen::post_json(addr, INFER_PATH, &self.body(i))).collect(),
        )
    }
}

/// A node's config and the ports it listens on.
struct Node {
    config: ReferenceNode,
    http: u16,
    quic: Option<u16>,
}

impl Node {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }
}

fn loopback(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

/// A general HTTP client for the scenarios that read answers (not for latency figures).
fn http_client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?)
}

/// How one inference request ended, as its answer's receipt says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// No answer, or a status other than 200.
    Failed,
    /// Answered by this node.
    Local,
    /// Answered by the upstream.
    Escalated,
    /// Answered locally because the upstream could not (`degraded: true`).
    Degraded,
}

impl Outcome {
    /// Classifies a reply from its status and body (the KServe `parameters` receipt).
    fn of(status: u16, body: &[u8]) -> Outcome {
        if status != 200 {
            return Outcome::Failed;
        }
        let Ok(json) = serde_json::from_slice::<Value>(body) else { return Outcome::Failed };
        let p = &json["parameters"];
        match (p["degraded"].as_bool(), p["escalated"].as_bool()) {
            (Some(true), _) => Outcome::Degraded,
            (_, Some(true)) => Outcome::Escalated,
            _ => Outcome::Local,
        }
    }
}

/// Sends one inference request and classifies its answer.
async fn infer(client: &reqwest::Client, url: &str, body: Vec<u8>) -> Outcome {
    let sent = client.post(url).header("content-type", "application/json").body(body).send().await;
    match sent {
        Ok(r) => {
            let status = r.status().as_u16();
            match r.bytes().await {
                Ok(b) => Outcome::of(status, &b),
                Err(_) => Outcome::Failed,
            }
        }
        Err(_) => Outcome::Failed,
    }
}

/// The sum of the samples of metric `name` whose labels contain every one of `labels`, from
/// a node's `/metrics` text; `None` if there is none.
fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let bare = series.split('{').next().unwrap_or(series);
        if bare != name || !labels.iter().all(|l| series.contains(l)) {
            continue;
        }
        if let Ok(v) = value.parse::<f64>() {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// A node's `/metrics` text.
async fn metrics_text(node: &Node) -> Result<String> {
    let response = http_client()?.get(node.url("/metrics")).send().await?;
    anyhow::ensure!(response.status().is_success(), "GET /metrics: HTTP {}", response.status());
    Ok(response.text().await?)
}

/// Sends `signal` to process `pid`.
fn signal(pid: u32, signal: libc::c_int) -> Result<()> {
    let pid = libc::pid_t::try_from(pid).context("pid out of range")?;
    // SAFETY: kill(2) takes two integers and touches no memory of ours; `pid` is a child of
    // this process that it has not reaped (NodeProcess holds it).
    let rc = unsafe { libc::kill(pid, signal) };
    anyhow::ensure!(rc == 0, "kill({pid}, {signal}): {}", std::io::Error::last_os_error());
    Ok(())
}

/// Raises this process's soft limit on open files to the hard limit: slow-client scenarios
/// hold thousands of sockets, and the nodes started from here inherit the limit.
fn raise_fd_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write the one struct passed, which lives here.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                eprintln!("faults: could not raise the open-file limit: {}", std::io::Error::last_os_error());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_come_from_the_receipt() {
        let answer = |p: &str| format!(r#"{{"outputs": [], "parameters": {p}}}"#).into_bytes();
        assert_eq!(Outcome::of(200, &answer(r#"{"escalated": false, "degraded": false}"#)), Outcome::Local);
        assert_eq!(
            Outcome::of(200, &answer(r#"{"escalated": true, "degraded": false}"#)),
            Outcome::Escalated
        );
        assert_eq!(Outcome::of(200, &answer(r#"{"escalated": true, "degraded": true}"#)), Outcome::Degraded);
        assert_eq!(Outcome::of(503, &answer(r#"{"escalated": false}"#)), Outcome::Failed);
        assert_eq!(Outcome::of(200, b"not json"), Outcome::Failed);
    }

    #[test]
    fn metrics_sum_matching_series() {
        let text = "# HELP x\ncascade_upstream_breaker{upstream=\"a\"} 2\ncascade_upstream_breaker{upstream=\"b\"} 0\n\
                    cascade_upstream_breaker_other 7\n";
        assert_eq!(metric(text, "cascade_upstream_breaker", &[]), Some(2.0));
        assert_eq!(metric(text, "cascade_upstream_breaker", &["upstream=\"b\""]), Some(0.0));
        assert_eq!(metric(text, "cascade_missing", &[]), None);
    }
}
