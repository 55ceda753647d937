//! An edge node whose upstream is a real KServe v2 server: the `kserve` package's ModelServer
//! wrapping onnxruntime on the central model (tools/kserve_upstream.py), started here as a
//! child process from the venv that tools/setup.sh installs.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cascade_runtime::config::UpstreamConfig;
use cascade_runtime::{Backend, ReferenceModel, TractBackend, reference};
use cascade_testkit::{
    client, digits, edge, get_text, hard_images, image_body, kserve_python_or_skip, metric, output_values,
    post, repo, resolve,
};
use edge_node::serve::Server;
use serde_json::json;

/// A KServe model server serving the central model as `central`, killed on drop.
struct KserveServer {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl KserveServer {
    async fn start(python: &Path) -> KserveServer {
        // A free port: bound, read, released, then handed to the server.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("kserve.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(python)
            .arg(repo().join("tools/kserve_upstream.py"))
            .arg(ReferenceModel::CentralFp32.path(&reference::default_models_dir()))
            .arg(port.to_string())
            .arg("central")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut server = KserveServer { child, port, log, _dir: dir };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&mut self) {
        let c = client();
        let url = format!("http://127.0.0.1:{}/v2/health/ready", self.port);
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("kserve server exited ({status}):\n{}", self.log_text());
            }
            if let Ok(r) = c.get(&url).send().await
                && r.status().is_success()
            {
                return;
            }
            // Importing kserve (fastapi, grpc, pandas) takes seconds on a loaded machine.
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "kserve server not ready:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for KserveServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The central model's logits for test image `i`, computed here by tract.
fn central_logits(indices: &[usize]) -> Vec<Vec<f32>> {
    let bytes = std::fs::read(ReferenceModel::CentralFp32.path(&reference::default_models_dir())).unwrap();
    let prepared = TractBackend::new().prepare("central", &bytes).unwrap();
    indices
        .iter()
        .map(|&i| {
            let input = reference::images_to_input(digits().image(i)).unwrap();
            prepared.run(&[input]).unwrap()[0].to_f32().unwrap()
        })
        .collect()
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &x)| if x > best.1 { (i, x) } else { best })
        .0
}

/// Hard requests escalate to the KServe server and carry the central model's logits, label
/// and softmax confidence; once the server is killed, every request is still answered
/// locally, degraded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalates_to_a_real_kserve_server_and_degrades_when_it_dies() {
    let Some(python) = kserve_python_or_skip("the KServe upstream test") else { return };
    let hard = hard_images(12, 0.85);
    let expected = central_logits(&hard);
    let mut kserve = KserveServer::start(&python).await;
    let server_name = format!("127.0.0.1:{}", kserve.port);

    // Threshold 1.0: every answer short of certainty escalates, and these are all far short.
    let mut config = edge(1.0, None);
    let mut upstream = UpstreamConfig::kserve(&format!("http://{server_name}"), "central");
    upstream.connect_timeout_ms = 500;
    upstream.request_timeout_ms = 1500;
    upstream.breaker.failure_threshold = 3;
    upstream.breaker.open_ms = 60_000;
    config.node.upstream = Some(upstream);
    let node = Server::start(resolve("edge-kserve.toml", &config)).await.unwrap();
    let addr: SocketAddr = node.http_addr();
    let c = client();

    let mut details = Vec::new();
    for (n, &i) in hard.iter().enumerate() {
        if n == 6 {
            kserve.kill();
        }
        let r = post(&c, addr, "digits", &serde_json::to_vec(&image_body(i)).unwrap()).await;
        assert_eq!(r.status, 200, "request {n} failed: {}", r.body);
        let p = &r.body["parameters"];
        if n < 6 {
            assert_eq!(p["tier"], server_name.as_str(), "{}", r.body);
            assert_eq!(p["escalated"], true, "{}", r.body);
            assert_eq!(p["degraded"], false, "{}", r.body);
            assert_eq!(r.body["outputs"][0]["name"], "logits");
            assert_eq!(r.body["outputs"][0]["shape"], json!([1, 10]));
            let got = output_values(&r.body);
            let want = &expected[n];
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(want) {
                // Relative to the logit, but not tighter than 1e-4 absolute near zero.
                assert!((g - w).abs() <= 1e-4 * w.abs().max(1.0), "image {i}: {got:?} vs tract {want:?}");
            }
            assert_eq!(p["label"], argmax(want).to_string(), "{}", r.body);
            let max = want.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let softmax_max = 1.0 / want.iter().map(|x| (x - max).exp()).sum::<f32>();
            let confidence = p["confidence"].as_f64().unwrap() as f32;
            assert!((confidence - softmax_max).abs() < 1e-4, "confidence {confidence} vs {softmax_max}");
        } else {
            assert_eq!(p["tier"], "edge", "{}", r.body);
            assert_eq!(p["escalated"], false, "{}", r.body);
            assert_eq!(p["degraded"], true, "{}", r.body);
            let reason = p["degraded_reason"].as_str().unwrap();
            assert!(["upstream_failed", "breaker_open"].contains(&reason), "{reason}");
            if let Some(d) = p["degraded_detail"].as_str() {
                details.push(d.to_owned());
            }
        }
    }
    // The first failures reached the dead server; their detail says what failed, without
    // the upstream's address (that is for the node's log, not its clients).
    assert!(!details.is_empty(), "no degraded answer said why");
    assert!(details.iter().all(|d| d == "cannot connect to the upstream"), "{details:#?}");
    let host = server_name.split(':').next().unwrap_or_default();
    assert!(details.iter().all(|d| !d.contains(host)), "{details:#?}");

    let (_, metrics) = get_text(&c, addr, "/metrics").await;
    assert_eq!(metric(&metrics, "cascade_escalations_total{", &["result=\"ok\""]), Some(6.0));
    node.shutdown().await.unwrap();
}
