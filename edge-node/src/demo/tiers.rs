//! The two tiers on loopback: certificates, the plugin built from source, both nodes'
//! configs, and the `edge-node serve` processes that run them.

use std::path::{Path, PathBuf};

use anyhow::Context;
use cascade_runtime::ReferenceModel;
use cascade_runtime::config::{self, ResolvedConfig};
use cascade_runtime::reference::ReferenceNode;
use cascade_runtime::transport::certs::Role;

use super::DemoOptions;
use crate::deployment::{CENTRAL, Certs, NodeProcess, free_tcp_port, free_udp_port, write_config};

/// The edge node's name, which its answers carry as their `tier`.
pub(super) const EDGE: &str = "edge";

/// How long the edge waits for one escalation before answering degraded. The default
/// (500 ms) is meant for a central tier on a fast machine; the demo's may run as an
/// unoptimised build on a busy one.
const ESCALATION_TIMEOUT_MS: u64 = 1000;

/// How long the edge's breaker stays open before it probes the central node again. Shorter
/// than the default (5 s) so that recovery after `--kill-central-at` is seen within a few
/// seconds of the restart, which is what the demo is there to show.
pub(super) const BREAKER_OPEN_MS: u64 = 1000;

/// The two tiers' files and ports, in a temporary directory removed when this is dropped.
pub(super) struct Tiers {
    dir: tempfile::TempDir,
    program: PathBuf,
    central_config: PathBuf,
    edge_config: PathBuf,
    /// The central node's HTTP port (readiness only; the edge reaches it over QUIC).
    pub(super) central_http: u16,
    /// The central node's QUIC port.
    pub(super) central_quic: u16,
    /// The edge node's HTTP port, which the demo's requests go to.
    pub(super) edge_http: u16,
}

impl Tiers {
    /// Issues certificates, builds the plugin and writes both configs on free ports.
    pub(super) fn prepare(options: &DemoOptions) -> anyhow::Result<Tiers> {
        let dir = tempfile::Builder::new().prefix("cascade-demo-").tempdir()?;
        let (central_http, central_quic, edge_http) = (free_tcp_port()?, free_udp_port()?, free_tcp_port()?);
        let certs = Certs::issue(&dir.path().join("certs"), &[(CENTRAL, Role::Central), (EDGE, Role::Edge)])?;
        eprintln!("   building the plugin {} ...", options.plugin_crate.display());
        let plugin = dir.path().join("mnist_classifier.wasm");
        let built = crate::plugin_cmd::build(&options.plugin_crate, &plugin, None)?;
        eprintln!("   plugin: {} bytes, sha256 {}", built.component.len(), built.digest);

        let model = |m: ReferenceModel| m.path(&options.models_dir);
        let mut central = ReferenceNode::new(CENTRAL, &model(ReferenceModel::CentralFp32), &plugin);
        central.plugin.sha256 = Some(built.digest.to_string());
        central.node.listeners.http = format!("127.0.0.1:{central_http}");
        certs.listen_quic(&mut central, &format!("127.0.0.1:{central_quic}"));
        let mut edge = ReferenceNode::new(EDGE, &model(ReferenceModel::EdgeInt8), &plugin);
        edge.plugin.sha256 = Some(built.digest.to_string());
        edge.node.listeners.http = format!("127.0.0.1:{edge_http}");
        edge.route.thresholds.normal = options.threshold;
        certs.upstream_quic(&mut edge, &format!("127.0.0.1:{central_quic}"));
        if let Some(up) = edge.node.upstream.as_mut() {
            up.request_timeout_ms = ESCALATION_TIMEOUT_MS;
            up.breaker.open_ms = BREAKER_OPEN_MS;
        }
        // The edge stays in `normal` mode, so the recovery the demo shows is the breaker's
        // alone: with automatic switching, the failed escalations would also put it in
        // `emergency` (no escalations), which ends only once the upstream error rate has
        // faded and the modes' dwell times have passed, tens of seconds for this short run.
        edge.node.modes.switching.automatic = false;
        let central_config = write_config(&central, dir.path())?;
        let edge_config = write_config(&edge, dir.path())?;
        let program = std::env::current_exe().context("cannot find this program's path")?;
        Ok(Tiers { dir, program, central_config, edge_config, central_http, central_quic, edge_http })
    }

    /// Starts the central node as `edge-node serve`, logging as `name` (a restart logs under
    /// a name of its own, so the first run's log is kept), and waits until it is ready.
    pub(super) async fn start_central(
        &self,
        client: &reqwest::Client,
        name: &str,
    ) -> anyhow::Result<NodeProcess> {
        let mut node = self.spawn_central(name)?;
        node.wait_ready(client, self.central_http).await?;
        Ok(node)
    }

    /// Starts the central node as [`Tiers::start_central`] does, without waiting.
    pub(super) fn spawn_central(&self, name: &str) -> anyhow::Result<NodeProcess> {
        NodeProcess::start(&self.program, name, &self.central_config, self.dir.path())
    }

    /// Starts the edge node and waits until it is ready.
    pub(super) async fn start_edge(&self, client: &reqwest::Client) -> anyhow::Result<NodeProcess> {
        let mut node = NodeProcess::start(&self.program, EDGE, &self.edge_config, self.dir.path())?;
        node.wait_ready(client, self.edge_http).await?;
        Ok(node)
    }

    /// Where the demo sends its requests.
    pub(super) fn edge_url(&self) -> String {
        format!("http://127.0.0.1:{}/v2/models/{}/infer", self.edge_http, cascade_runtime::reference::ROUTE)
    }

    /// The edge's and the central node's configs, resolved as the nodes resolve them (for
    /// running their plugin and models in process).
    pub(super) fn resolved(&self) -> anyhow::Result<(ResolvedConfig, ResolvedConfig)> {
        let resolve = |file: &Path| -> anyhow::Result<ResolvedConfig> {
            config::load(file)?.resolve().with_context(|| format!("resolving {}", file.display()))
        };
        Ok((resolve(&self.edge_config)?, resolve(&self.central_config)?))
    }
}
