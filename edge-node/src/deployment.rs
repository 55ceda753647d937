//! A reference deployment on loopback, for the demo and the benchmarks: node configs written
//! as the TOML a user would write, and nodes run as real `edge-node serve` processes.
//!
//! [`NodeToml`] is the one place that writes node configs; [`NodeProcess`] starts a node
//! from one, waits until it is ready, and kills it when dropped, so no error path leaves
//! nodes running.

use std::fmt::Write as _;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The name on the central node's certificate, which edges verify.
pub const CENTRAL: &str = "central";

/// A node config: one model, the mnist-classifier plugin on route `digits` (declaring its
/// `image` input and `probabilities` output), and whatever listeners, upstream and
/// batching the role needs.
#[derive(Debug, Clone)]
pub struct NodeToml {
    name: String,
    model: PathBuf,
    backend: String,
    plugin: PathBuf,
    plugin_sha256: Option<String>,
    plugin_deadline_ms: Option<u64>,
    http: String,
    quic: Option<(String, PathBuf)>,
    upstream: Option<(String, PathBuf)>,
    request_timeout_ms: u64,
    breaker_open_ms: Option<u64>,
    threshold: f64,
    route_in_flight: Option<u32>,
    cache: bool,
    batching: Option<(u32, u64, bool)>,
    escalation_budget_rps: Option<f64>,
    automatic_modes: bool,
}

impl NodeToml {
    /// Node `name` running `model` through `plugin` (a built component) on route `digits`,
    /// HTTP on any free loopback port, every answer final (threshold 0).
    pub fn new(name: &str, model: &Path, plugin: &Path) -> NodeToml {
        NodeToml {
            name: name.to_owned(),
            model: model.to_path_buf(),
            backend: "tract".into(),
            plugin: plugin.to_path_buf(),
            plugin_sha256: None,
            plugin_deadline_ms: None,
            http: "127.0.0.1:0".into(),
            quic: None,
            upstream: None,
            request_timeout_ms: 1000,
            breaker_open_ms: None,
            threshold: 0.0,
            route_in_flight: None,
            cache: true,
            batching: None,
            escalation_budget_rps: None,
            automatic_modes: true,
        }
    }

    /// Runs the model on `backend` (`tract` or `wgpu`, no fallback).
    pub fn backend(mut self, backend: &str) -> Self {
        self.backend = backend.to_owned();
        self
    }

    /// Pins the plugin's sha256.
    pub fn plugin_sha256(mut self, sha256: &str) -> Self {
        self.plugin_sha256 = Some(sha256.to_owned());
        self
    }

    /// The plugin's per-request deadline (the node's default is 100 ms).
    pub fn plugin_deadline_ms(mut self, ms: u64) -> Self {
        self.plugin_deadline_ms = Some(ms);
        self
    }

    /// The HTTP listener's address.
    pub fn http(mut self, addr: impl Into<String>) -> Self {
        self.http = addr.into();
        self
    }

    /// Accepts escalations over QUIC on `addr`, with `{name}.pem`/`.key` and `ca.pem` from
    /// `certs` (as `edge-node certs` writes them).
    pub fn quic(mut self, addr: impl Into<String>, certs: &Path) -> Self {
        self.quic = Some((addr.into(), certs.to_path_buf()));
        self
    }

    /// Escalates to the central node at `addr` over QUIC, presenting `{name}.pem` from `certs`.
    pub fn upstream(mut self, addr: impl Into<String>, certs: &Path) -> Self {
        self.upstream = Some((addr.into(), certs.to_path_buf()));
        self
    }

    /// Gives up on one escalation after this long.
    pub fn request_timeout_ms(mut self, ms: u64) -> Self {
        self.request_timeout_ms = ms;
        self
    }

    /// How long the upstream's breaker stays open before probing.
    pub fn breaker_open_ms(mut self, ms: u64) -> Self {
        self.breaker_open_ms = Some(ms);
        self
    }

    /// Answers below this confidence escalate.
    pub fn threshold(mut self, threshold: f64) -> Self {
        self.threshold = threshold;
        self
    }

    /// Requests of the route running at once (the rest queue).
    pub fn route_in_flight(mut self, n: u32) -> Self {
        self.route_in_flight = Some(n);
        self
    }

    /// Turns the route's cache off (`cache_ttl_s = 0`).
    pub fn no_cache(mut self) -> Self {
        self.cache = false;
        self
    }

    /// Batches model calls: up to `max_batch` rows, waiting at most `max_delay_us`; with
    /// `calibrate`, only up to a batch size measured to pay for itself at load.
    pub fn batching(mut self, max_batch: u32, max_delay_us: u64, calibrate: bool) -> Self {
        self.batching = Some((max_batch, max_delay_us, calibrate));
        self
    }

    /// Escalations per second allowed in `normal` mode.
    pub fn escalation_budget_rps(mut self, rps: f64) -> Self {
        self.escalation_budget_rps = Some(rps);
        self
    }

    /// Keeps the node in `normal` mode whatever the load (benchmarks).
    pub fn fixed_mode(mut self) -> Self {
        self.automatic_modes = false;
        self
    }

    /// The config file's text.
    pub fn render(&self) -> String {
        let name = &self.name;
        let mut t = format!("[node]\nname = \"{name}\"\n\n[listeners]\nhttp = \"{}\"\n", self.http);
        if let Some((addr, certs)) = &self.quic {
            let _ = write!(
                t,
                "quic = \"{addr}\"\nquic_cert = \"{}\"\nquic_key = \"{}\"\nquic_ca = \"{}\"\n",
                toml_path(&certs.join(format!("{name}.pem"))),
                toml_path(&certs.join(format!("{name}.key"))),
                toml_path(&certs.join("ca.pem")),
            );
        }
        let _ = write!(
            t,
            "\n[models.{name}]\npath = \"{}\"\nbackend = \"{}\"\n\n[plugins.mnist]\npath = \"{}\"\n\
             models = [\"{name}\"]\n",
            toml_path(&self.model),
            self.backend,
            toml_path(&self.plugin),
        );
        if let Some(sha) = &self.plugin_sha256 {
            let _ = writeln!(t, "sha256 = \"{sha}\"");
        }
        if let Some(ms) = self.plugin_deadline_ms {
            let _ = writeln!(t, "deadline_ms = {ms}");
        }
        let _ = write!(
            t,
            "\n[plugins.mnist.config]\nmodel = \"{name}\"\n\n[routes.digits]\nplugin = \"mnist\"\n\
             deadline_ms = 2000\n\
             inputs = [{{ name = \"image\", datatype = \"UINT8\", shape = [28, 28] }}]\n\
             outputs = [{{ name = \"probabilities\", datatype = \"FP32\", shape = [1, 10] }}]\n"
        );
        if !self.cache {
            t.push_str("cache_ttl_s = 0\n");
        }
        if let Some(n) = self.route_in_flight {
            let _ = writeln!(t, "max_in_flight = {n}");
        }
        let _ = writeln!(t, "\n[routes.digits.thresholds]\nnormal = {:?}", self.threshold);
        if let Some((addr, certs)) = &self.upstream {
            let _ = write!(
                t,
                "\n[upstream]\naddresses = [\"{addr}\"]\nserver_name = \"{CENTRAL}\"\nca = \"{}\"\n\
                 cert = \"{}\"\nkey = \"{}\"\nrequest_timeout_ms = {}\n",
                toml_path(&certs.join("ca.pem")),
                toml_path(&certs.join(format!("{name}.pem"))),
                toml_path(&certs.join(format!("{name}.key"))),
                self.request_timeout_ms,
            );
            if let Some(ms) = self.breaker_open_ms {
                let _ = write!(t, "\n[upstream.breaker]\nopen_ms = {ms}\n");
            }
        }
        if let Some((max_batch, max_delay_us, calibrate)) = self.batching {
            let _ = write!(
                t,
                "\n[batching]\nmax_batch = {max_batch}\nmax_delay_us = {max_delay_us}\ncalibrate = {calibrate}\n"
            );
        }
        if let Some(rps) = self.escalation_budget_rps {
            let _ = write!(t, "\n[modes.normal]\nescalation_budget_rps = {rps:?}\n");
        }
        if !self.automatic_modes {
            t.push_str("\n[modes.switching]\nautomatic = false\n");
        }
        t
    }

    /// Writes the config as `{dir}/{name}.toml` and returns its path.
    pub fn write(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let path = dir.join(format!("{}.toml", self.name));
        std::fs::write(&path, self.render()).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

/// A path as a TOML basic string's contents.
fn toml_path(p: &Path) -> String {
    p.display().to_string().replace('\\', "\\\\").replace('"', "\\\"")
}

/// A free TCP port on loopback (for an HTTP listener).
pub fn free_tcp_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A free UDP port on loopback (for a QUIC listener).
pub fn free_udp_port() -> anyhow::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// An `edge-node serve` child process, logging to a file; killed when dropped.
#[derive(Debug)]
pub struct NodeProcess {
    name: String,
    child: Child,
    log: PathBuf,
}

impl NodeProcess {
    /// Starts this program's `serve` on `config`, logging to `{dir}/{name}.log`. The node's
    /// standard input is a pipe this process holds: however this process ends, even killed,
    /// the node sees the pipe close and shuts down (`serve --exit-with-parent`).
    pub fn start(name: &str, config: &Path, dir: &Path) -> anyhow::Result<NodeProcess> {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(std::env::current_exe().context("cannot find this program's path")?)
            .arg("serve")
            .arg("--exit-with-parent")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::piped())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting the {name} node"))?;
        Ok(NodeProcess { name: name.to_owned(), child, log })
    }

    /// Waits until the node answers `/v2/health/ready` on `http_port` (60 s at most).
    pub async fn wait_ready(&mut self, client: &reqwest::Client, http_port: u16) -> anyhow::Result<()> {
        let url = format!("http://127.0.0.1:{http_port}/v2/health/ready");
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if let Some(status) = self.child.try_wait()? {
                bail!("the {} node exited ({status}) before it was ready:\n{}", self.name, self.log_tail());
            }
            if client.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the {} node was not ready after 60 s:\n{}", self.name, self.log_tail())
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// How the process ended, if it has.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Kills the process at once (SIGKILL: no draining), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last lines of its log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_runtime::config;

    #[test]
    fn rendered_configs_validate() {
        let dir = tempfile::tempdir().unwrap();
        let (model, plugin, certs) =
            (dir.path().join("m.onnx"), dir.path().join("p.wasm"), dir.path().join("c"));
        let central = NodeToml::new(CENTRAL, &model, &plugin)
            .quic("127.0.0.1:4433", &certs)
            .batching(32, 2000, true)
            .plugin_deadline_ms(1500)
            .route_in_flight(64)
            .fixed_mode();
        let edge = NodeToml::new("edge-a", &model, &plugin)
            .upstream("127.0.0.1:4433", &certs)
            .threshold(0.9)
            .breaker_open_ms(200)
            .escalation_budget_rps(1000.0)
            .no_cache();
        for node in [central, edge] {
            let text = node.render();
            let v = config::parse(&text, Path::new("x.toml")).unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(v.settings.routes["digits"].threshold(cascade_runtime::Mode::Normal), node.threshold);
        }
    }
}
