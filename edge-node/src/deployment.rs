//! A reference deployment on loopback, for the demo (and the benchmarks): node configs
//! written as the TOML a user would write ([`ReferenceNode`] with the certificates of
//! [`Certs`]), and nodes run as real `edge-node serve` processes ([`NodeProcess`]), killed
//! when dropped, so no error path leaves nodes running.

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cascade_runtime::config::UpstreamConfig;
use cascade_runtime::reference::ReferenceNode;
use cascade_runtime::transport::certs::Role;

/// The name on the central node's certificate, which edges verify.
pub const CENTRAL: &str = "central";

/// A directory of certificates as `edge-node certs` writes them: `ca.pem`, and
/// `{name}.pem` / `{name}.key` per node.
#[derive(Debug, Clone)]
pub struct Certs(pub PathBuf);

impl Certs {
    /// Creates a CA in `dir` and issues a certificate for each node of `nodes`, in its role.
    pub fn issue(dir: &Path, nodes: &[(&str, Role)]) -> anyhow::Result<Certs> {
        crate::certs_cmd::init(dir, false)?;
        for &(name, role) in nodes {
            crate::certs_cmd::issue(dir, name, role, dir, &[], false)?;
        }
        Ok(Certs(dir.to_path_buf()))
    }

    /// Makes `node` accept escalations over QUIC on `addr` with its own certificate.
    pub fn listen_quic(&self, node: &mut ReferenceNode, addr: &str) {
        let name = node.node.node.name.clone();
        let (cert, key) = self.of(&name);
        node.node.listen_quic(addr, &cert, &key, &self.0.join("ca.pem"));
    }

    /// Makes `node` escalate to the central node at `addr`, presenting its own certificate.
    pub fn upstream_quic(&self, node: &mut ReferenceNode, addr: &str) {
        let (cert, key) = self.of(&node.node.node.name);
        let ca = self.0.join("ca.pem");
        node.node.upstream = Some(UpstreamConfig::quic(&[addr.to_owned()], CENTRAL, &ca, &cert, &key));
    }

    fn of(&self, name: &str) -> (PathBuf, PathBuf) {
        (self.0.join(format!("{name}.pem")), self.0.join(format!("{name}.key")))
    }
}

/// Writes `node`'s config as `{dir}/{name}.toml` and returns its path.
pub fn write_config(node: &ReferenceNode, dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{}.toml", node.node.node.name));
    node.config().write(&path).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
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
    /// Starts `edge-node serve` (the binary at `program`) on `config`, logging to
    /// `{dir}/{name}.log`. The node's standard input is a pipe this process holds: however
    /// this process ends, even killed, the node sees the pipe close and shuts down
    /// (`serve --exit-with-parent`).
    pub fn start(program: &Path, name: &str, config: &Path, dir: &Path) -> anyhow::Result<NodeProcess> {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(program)
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
    use cascade_runtime::config::BatchingConfig;
    use cascade_runtime::{Mode, config};

    #[test]
    fn reference_configs_with_certificates_validate() {
        let dir = tempfile::tempdir().unwrap();
        let (model, plugin, certs) =
            (dir.path().join("m.onnx"), dir.path().join("p.wasm"), Certs(dir.path().join("c")));
        let mut central = ReferenceNode::new(CENTRAL, &model, &plugin);
        certs.listen_quic(&mut central, "127.0.0.1:4433");
        central.node.batching = Some(BatchingConfig::new(32, 2000, true));
        central.node.modes.switching.automatic = false;
        let mut edge = ReferenceNode::new("edge-a", &model, &plugin);
        certs.upstream_quic(&mut edge, "127.0.0.1:4433");
        edge.route.thresholds.normal = 0.9;
        edge.route.cache_ttl_s = 0;
        for node in [central, edge] {
            let path = write_config(&node, dir.path()).unwrap();
            let v = config::load(&path).unwrap();
            let route = &v.settings.routes[cascade_runtime::reference::ROUTE];
            assert_eq!(route.threshold(Mode::Normal), node.route.thresholds.normal);
        }
        let central = config::load(&dir.path().join("central.toml")).unwrap();
        assert_eq!(central.settings.quic_tls.unwrap().cert, dir.path().join("c/central.pem"));
        let edge = config::load(&dir.path().join("edge-a.toml")).unwrap();
        assert_eq!(edge.settings.upstream.unwrap().quic().unwrap().key, dir.path().join("c/edge-a.key"));
    }
}
