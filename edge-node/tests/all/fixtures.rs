//! Shared fixtures: the guest plugins (built once per process), a deployment's certificates,
//! node configs, and an HTTP client.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use cascade_runtime::config::{self, ResolvedConfig};
use cascade_runtime::guest_build::{GuestBuilder, default_guest_target_dir};
use cascade_runtime::{Backend, Digits, ReferenceModel, Split, TractBackend, reference};
use edge_node::certs_cmd::{self, CertsCommand};
use serde_json::{Value, json};

pub(crate) struct Fixture {
    /// Holds the certificates and configs; kept for the whole test process.
    pub(crate) dir: tempfile::TempDir,
    pub(crate) mnist: PathBuf,
    pub(crate) hostile: PathBuf,
    pub(crate) certs: PathBuf,
}

/// Builds both guests and a CA with `central` and `edge` certificates, once per process.
pub(crate) fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let dir = tempfile::tempdir().unwrap();
        let out = default_guest_target_dir().join("components");
        std::fs::create_dir_all(&out).unwrap();
        let builder = GuestBuilder::default();
        let build = |crate_dir: PathBuf, name: &str| {
            let built = builder.build(&crate_dir).unwrap_or_else(|e| panic!("{e}"));
            let file = dir.path().join(format!("{name}.wasm"));
            std::fs::write(&file, &built.component).unwrap();
            file
        };
        let mnist = build(root.join("examples/mnist-classifier"), "mnist");
        let hostile = build(root.join("runtime/tests/plugins/hostile"), "hostile");
        let ca = dir.path().join("ca");
        let certs = dir.path().join("certs");
        certs_cmd::run(CertsCommand::Init { dir: ca.clone(), force: false }).unwrap();
        for name in ["central", "edge"] {
            certs_cmd::run(CertsCommand::Issue {
                ca_dir: ca.clone(),
                name: name.into(),
                out_dir: certs.clone(),
                dns: Vec::new(),
                force: false,
            })
            .unwrap();
        }
        Fixture { dir, mnist, hostile, certs }
    })
}

fn model_path(model: ReferenceModel) -> String {
    model.path(&reference::default_models_dir()).display().to_string()
}

/// A central node's config: QUIC listener, the central model, every answer final.
pub(crate) fn central_toml() -> String {
    let f = fixture();
    format!(
        r#"
[node]
name = "central"

[listeners]
http = "127.0.0.1:0"
quic = "127.0.0.1:0"
quic_cert = "{certs}/central.pem"
quic_key = "{certs}/central.key"
quic_ca = "{certs}/ca.pem"

[models.central]
path = "{model}"

[plugins.mnist]
path = "{mnist}"
models = ["central"]
deadline_ms = 1000

[plugins.mnist.config]
model = "central"

[routes.digits]
plugin = "mnist"
deadline_ms = 2000
thresholds = {{ normal = 0.0 }}

[modes.switching]
automatic = false
"#,
        certs = f.certs.display(),
        model = model_path(ReferenceModel::CentralFp32),
        mnist = f.mnist.display(),
    )
}

/// An edge node's config. `digits` is appended to `[routes.digits]`; `upstream`, if given, is
/// the central node's QUIC address.
pub(crate) fn edge_toml(threshold: f64, digits: &str, upstream: Option<SocketAddr>) -> String {
    let f = fixture();
    let upstream = upstream
        .map(|addr| {
            format!(
                r#"
[upstream]
addresses = ["{addr}"]
server_name = "central"
ca = "{certs}/ca.pem"
cert = "{certs}/edge.pem"
key = "{certs}/edge.key"
connect_timeout_ms = 500
request_timeout_ms = 500

[upstream.breaker]
failure_threshold = 3
open_ms = 60000
"#,
                certs = f.certs.display()
            )
        })
        .unwrap_or_default();
    format!(
        r#"
[node]
name = "edge"

[listeners]
http = "127.0.0.1:0"

[models.edge]
path = "{model}"

[plugins.mnist]
path = "{mnist}"
models = ["edge"]
deadline_ms = 1000

[plugins.mnist.config]
model = "edge"

[plugins.hostile]
path = "{hostile}"
models = ["edge"]
deadline_ms = 1000

[routes.digits]
plugin = "mnist"
deadline_ms = 2000
thresholds = {{ normal = {threshold} }}
{digits}

[routes.hostile]
plugin = "hostile"
deadline_ms = 2000
max_in_flight = 1
queue_len = 0
thresholds = {{ normal = 0.0 }}

[modes.switching]
automatic = false
{upstream}
"#,
        model = model_path(ReferenceModel::EdgeInt8),
        mnist = f.mnist.display(),
        hostile = f.hostile.display(),
    )
}

/// Writes `text` as `name` in the fixture directory and loads and resolves it.
pub(crate) fn resolve(name: &str, text: &str) -> ResolvedConfig {
    let path = write_config(name, text);
    config::load(&path).unwrap_or_else(|e| panic!("{e}")).resolve().unwrap_or_else(|e| panic!("{e}"))
}

pub(crate) fn write_config(name: &str, text: &str) -> PathBuf {
    let path = fixture().dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The test split, once.
pub(crate) fn digits() -> &'static Digits {
    static DIGITS: OnceLock<Digits> = OnceLock::new();
    DIGITS.get_or_init(|| Digits::load_split(&reference::default_models_dir(), Split::Test).unwrap())
}

/// Softmax of `model`'s logits for image `i`, as the mnist plugin computes it.
pub(crate) fn probabilities(model: ReferenceModel, indices: &[usize]) -> Vec<Vec<f32>> {
    let bytes = std::fs::read(model.path(&reference::default_models_dir())).unwrap();
    let prepared = TractBackend::new().prepare("m", &bytes).unwrap();
    indices
        .iter()
        .map(|&i| {
            let input = reference::images_to_input(digits().image(i)).unwrap();
            let logits = prepared.run(&[input]).unwrap()[0].to_f32().unwrap();
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
            let sum: f32 = exp.iter().sum();
            exp.iter().map(|e| e / sum).collect()
        })
        .collect()
}

/// The first `n` test images the edge model is less sure of than `below`.
pub(crate) fn hard_images(n: usize, below: f32) -> Vec<usize> {
    let candidates: Vec<usize> = (0..digits().len().min(3000)).collect();
    let probs = probabilities(ReferenceModel::EdgeInt8, &candidates);
    let hard: Vec<usize> = candidates
        .into_iter()
        .zip(probs)
        .filter(|(_, p)| p.iter().copied().fold(0.0, f32::max) < below)
        .map(|(i, _)| i)
        .take(n)
        .collect();
    assert_eq!(hard.len(), n, "not enough hard images in the test split");
    hard
}

/// A KServe v2 request body for test image `i`.
pub(crate) fn image_body(i: usize) -> Value {
    json!({
        "id": format!("img-{i}"),
        "inputs": [{ "name": "image", "shape": [28, 28], "datatype": "UINT8", "data": digits().image(i) }]
    })
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build().unwrap()
}

pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<u64>,
    pub(crate) body: Value,
}

pub(crate) async fn post(client: &reqwest::Client, addr: SocketAddr, route: &str, body: &[u8]) -> Response {
    let r = client
        .post(format!("http://{addr}/v2/models/{route}/infer"))
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry_after =
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let body = r.json().await.unwrap_or(Value::Null);
    Response { status, retry_after, body }
}

pub(crate) async fn get_text(client: &reqwest::Client, addr: SocketAddr, path: &str) -> (u16, String) {
    let r = client.get(format!("http://{addr}{path}")).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The value of the first Prometheus sample starting with `prefix` and containing every label.
pub(crate) fn metric(text: &str, prefix: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix) && labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The response's `outputs[0].data` as floats.
pub(crate) fn output_values(body: &Value) -> Vec<f32> {
    body["outputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect()
}

pub(crate) fn assert_close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-4, "{a:?} vs {b:?}");
    }
}

/// The repository's root.
pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The venv's python if it can run KServe; otherwise why not.
fn kserve_python() -> Result<PathBuf, String> {
    let python = repo().join("target/peer-venv/bin/python");
    if !python.exists() {
        return Err(format!("{} is missing; run tools/setup.sh", python.display()));
    }
    let probe = Command::new(&python).args(["-c", "import kserve, onnxruntime"]).output();
    match probe {
        Ok(out) if out.status.success() => Ok(python),
        Ok(out) => Err(format!(
            "{} cannot import kserve and onnxruntime ({}); run tools/setup.sh",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run {}: {e}", python.display())),
    }
}

/// The KServe venv's python, or `None` after saying why `test` is skipped. With `CI` set,
/// a missing venv fails the test instead: CI installs it.
pub(crate) fn kserve_python_or_skip(test: &str) -> Option<PathBuf> {
    match kserve_python() {
        Ok(p) => Some(p),
        Err(why) if std::env::var_os("CI").is_some() => panic!("CI needs the KServe venv: {why}"),
        Err(why) => {
            eprintln!("skipping {test}: {why}");
            None
        }
    }
}
