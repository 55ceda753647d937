//! Guests, certificates and the reference nodes' configs, made once per test process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cascade_runtime::ReferenceModel;
use cascade_runtime::config::{self, PluginConfig, ResolvedConfig, ResolvedPlugin, RouteConfig};
use cascade_runtime::guest_build::{GuestBuilder, default_guest_target_dir};
use cascade_runtime::reference::{self, ReferenceNode};
use cascade_runtime::transport::certs::Role;
use edge_node::deployment::{CENTRAL, Certs};

/// A guest plugin built from source: its component file and bytes.
#[derive(Debug)]
pub struct Guest {
    /// The component, written to the fixture directory.
    pub file: PathBuf,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

impl Guest {
    /// The guest as a config would resolve it, allowed `models`, with a deadline of
    /// `deadline_ms`, a 16 MiB memory cap and `config` as its static settings.
    pub fn resolved(&self, models: &[&str], deadline_ms: u64, config: &[(&str, &str)]) -> ResolvedPlugin {
        let spec = config::PluginSpec {
            path: self.file.clone(),
            pinned: None,
            memory_limit_bytes: 16 << 20,
            deadline: std::time::Duration::from_millis(deadline_ms),
            models: models.iter().map(|m| m.to_string()).collect(),
            config: config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        ResolvedPlugin::new(spec, self.bytes.clone())
    }
}

/// What every test shares.
#[derive(Debug)]
pub struct Fixture {
    /// Holds the components, certificates and configs; kept for the whole test process.
    pub dir: tempfile::TempDir,
    /// `examples/mnist-classifier`.
    pub mnist: Guest,
    /// `runtime/tests/plugins/hostile`: a plugin that misbehaves on request.
    pub hostile: Guest,
    /// A CA with `central` and `edge` certificates.
    pub certs: Certs,
}

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds both guests and issues the certificates, once per process (the first guest
/// build compiles std for wasm32, which takes a minute or two).
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(default_guest_target_dir()).unwrap();
        let builder = GuestBuilder::default();
        let build = |crate_dir: PathBuf, name: &str| {
            let built = builder.build(&crate_dir).unwrap_or_else(|e| panic!("{e}"));
            let file = dir.path().join(format!("{name}.wasm"));
            std::fs::write(&file, &built.component).unwrap();
            Guest { file, bytes: built.component }
        };
        let mnist = build(repo().join("examples/mnist-classifier"), "mnist");
        let hostile = build(repo().join("runtime/tests/plugins/hostile"), "hostile");
        let certs =
            Certs::issue(&dir.path().join("certs"), &[(CENTRAL, Role::Central), ("edge", Role::Edge)])
                .unwrap();
        Fixture { dir, mnist, hostile, certs }
    })
}

/// A central node: QUIC listener on any free port, the central model, every answer final,
/// the mode fixed at `normal`.
pub fn central() -> ReferenceNode {
    let f = fixture();
    let model = ReferenceModel::CentralFp32.path(&reference::default_models_dir());
    let mut node = ReferenceNode::new(CENTRAL, &model, &f.mnist.file);
    node.plugin.deadline_ms = 1000;
    f.certs.listen_quic(&mut node, "127.0.0.1:0");
    node.node.modes.switching.automatic = false;
    node
}

/// An edge node: the edge model on route `digits` (declaring no tensors) escalating below
/// `threshold` to the central node at `upstream` (if any; its breaker opens after 3
/// failures for a minute),
/// and route `hostile` served by the hostile plugin (one request at a time, no queue,
/// every answer final). The mode is fixed at `normal`.
pub fn edge(threshold: f64, upstream: Option<SocketAddr>) -> ReferenceNode {
    let f = fixture();
    let model = ReferenceModel::EdgeInt8.path(&reference::default_models_dir());
    let mut node = ReferenceNode::new("edge", &model, &f.mnist.file);
    node.plugin.deadline_ms = 1000;
    node.route.thresholds.normal = threshold;
    // The plugin checks its own inputs; tests that want the route to declare them say so.
    node.route.inputs.clear();
    node.route.outputs.clear();
    let mut hostile = PluginConfig::new(&f.hostile.file);
    hostile.models = vec!["edge".into()];
    hostile.deadline_ms = 1000;
    node.node.plugins.insert("hostile".into(), hostile);
    let mut route = RouteConfig::new("hostile", 0.0);
    route.deadline_ms = 2000;
    route.max_in_flight = 1;
    route.queue_len = 0;
    node.node.routes.insert("hostile".into(), route);
    node.node.modes.switching.automatic = false;
    if let Some(addr) = upstream {
        f.certs.upstream_quic(&mut node, &addr.to_string());
        let up = node.node.upstream.as_mut().unwrap();
        up.connect_timeout_ms = 500;
        up.request_timeout_ms = 500;
        up.breaker.failure_threshold = 3;
        up.breaker.open_ms = 60_000;
    }
    node
}

/// Writes `contents` as `file` in the fixture directory and returns its path.
pub fn write_file(file: &str, contents: &str) -> PathBuf {
    let path = fixture().dir.path().join(file);
    std::fs::write(&path, contents).unwrap();
    path
}

/// Writes `node`'s config as `file` in the fixture directory and returns its path.
pub fn write_config(file: &str, node: &ReferenceNode) -> PathBuf {
    let path = fixture().dir.path().join(file);
    node.config().write(&path).unwrap_or_else(|e| panic!("{e}"));
    path
}

/// Writes `node`'s config as `file` in the fixture directory, then loads and resolves it.
pub fn resolve(file: &str, node: &ReferenceNode) -> ResolvedConfig {
    let path = write_config(file, node);
    config::load(&path).unwrap_or_else(|e| panic!("{e}")).resolve().unwrap_or_else(|e| panic!("{e}"))
}
