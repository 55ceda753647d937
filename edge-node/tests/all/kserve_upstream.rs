//! An edge node whose upstream is a real KServe v2 server: the `kserve` package's ModelServer
//! wrapping onnxruntime on the central model (tools/kserve_upstream.py), started here as a
//! child process from the venv that tools/setup.sh installs.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cascade_runtime::config::UpstreamConfig;
use cascade_runtime::config::schema::{FromUpstreamConfig, OutputMapConfig, TensorDeclConfig};
use cascade_runtime::reference::ReferenceNode;
use cascade_runtime::{ReferenceModel, reference};
use cascade_testkit::{
    client, edge, get_text, hard_images, image_body, kserve_python_or_skip, metric, output_values, post,
    probabilities, repo, resolve,
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

/// The first `n` test images the edge model is at least `above` sure of.
fn easy_images(n: usize, above: f32) -> Vec<usize> {
    let candidates: Vec<usize> = (0..200).collect();
    let easy: Vec<usize> = probabilities(ReferenceModel::EdgeInt8, &candidates)
        .into_iter()
        .zip(candidates)
        .filter(|(p, _)| p.iter().copied().fold(0.0, f32::max) >= above)
        .map(|(_, i)| i)
        .take(n)
        .collect();
    assert_eq!(easy.len(), n, "not enough easy images in the test split");
    easy
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &x)| if x > best.1 { (i, x) } else { best })
        .0
}

/// Route `digits` declaring the plugin's `probabilities` output, escalating below 0.85 to the
/// KServe server on `port`, whose model answers raw `logits`.
fn edge_before_kserve(port: u16, from_upstream: Option<FromUpstreamConfig>) -> ReferenceNode {
    let mut config = edge(0.85, None);
    config.route.outputs =
        vec![TensorDeclConfig { name: "probabilities".into(), datatype: "FP32".into(), shape: vec![1, 10] }];
    config.route.from_upstream = from_upstream;
    let mut upstream = UpstreamConfig::kserve(&format!("http://127.0.0.1:{port}"), "central");
    upstream.connect_timeout_ms = 500;
    upstream.request_timeout_ms = 1500;
    upstream.breaker.failure_threshold = 3;
    upstream.breaker.open_ms = 60_000;
    config.node.upstream = Some(upstream);
    config
}

/// The route's answer contract holds whichever tier answers: with the KServe server's
/// `logits` mapped to the route's `probabilities` (softmax, confidence and label from it), a
/// client asking for `probabilities` by name gets them from local and escalated answers
/// alike, the escalated ones the central model's; once the server is killed, every request is
/// still answered locally, degraded, with the same output. A route that declares an output
/// the server cannot give, with no mapping, is refused at start, naming the output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalates_to_a_real_kserve_server_and_degrades_when_it_dies() {
    let Some(python) = kserve_python_or_skip("the KServe upstream test") else { return };
    let hard = hard_images(6, 0.85);
    let easy = easy_images(3, 0.99);
    let expected = probabilities(ReferenceModel::CentralFp32, &hard);
    let mut kserve = KserveServer::start(&python).await;
    let server_name = format!("127.0.0.1:{}", kserve.port);

    // No mapping: the server's model answers `logits`, not `probabilities`.
    let err = Server::start(resolve("edge-kserve-unmapped.toml", &edge_before_kserve(kserve.port, None)))
        .await
        .err()
        .expect("a node whose route cannot get its outputs from the upstream must not start");
    let err = format!("{err:#}");
    assert!(err.contains("needs upstream output `probabilities`"), "{err}");
    assert!(err.contains("answers only `logits`"), "{err}");
    assert!(err.contains("[routes.digits.from_upstream]"), "{err}");

    let mapping = FromUpstreamConfig {
        outputs: vec![OutputMapConfig {
            name: "probabilities".into(),
            from: "logits".into(),
            transform: "softmax".into(),
        }],
        confidence: Some("probabilities".into()),
        label: Some("probabilities".into()),
    };
    let config = edge_before_kserve(kserve.port, Some(mapping));
    let node = Server::start(resolve("edge-kserve.toml", &config)).await.unwrap();
    let addr: SocketAddr = node.http_addr();
    let c = client();
    // Every request names the output it wants, as a client that read the metadata would.
    let ask = |i: usize| {
        let mut body = image_body(i);
        body["outputs"] = json!([{ "name": "probabilities" }]);
        serde_json::to_vec(&body).unwrap()
    };

    for &i in &easy {
        let r = post(&c, addr, "digits", &ask(i)).await;
        assert_eq!(r.status, 200, "easy image {i}: {}", r.body);
        assert_eq!(r.body["parameters"]["escalated"], false, "{}", r.body);
        assert_eq!(r.body["outputs"][0]["name"], "probabilities", "{}", r.body);
    }
    let mut details = Vec::new();
    for (n, &i) in hard.iter().enumerate() {
        if n == 3 {
            kserve.kill();
        }
        let r = post(&c, addr, "digits", &ask(i)).await;
        assert_eq!(r.status, 200, "request {n} failed: {}", r.body);
        let p = &r.body["parameters"];
        assert_eq!(r.body["outputs"].as_array().map(Vec::len), Some(1), "{}", r.body);
        assert_eq!(r.body["outputs"][0]["name"], "probabilities", "{}", r.body);
        assert_eq!(r.body["outputs"][0]["shape"], json!([1, 10]));
        if n < 3 {
            assert_eq!(p["tier"], server_name.as_str(), "{}", r.body);
            assert_eq!(p["escalated"], true, "{}", r.body);
            assert_eq!(p["degraded"], false, "{}", r.body);
            let got = output_values(&r.body);
            let want = &expected[n];
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() <= 1e-4, "image {i}: {got:?} vs tract's softmax {want:?}");
            }
            assert_eq!(p["label"], argmax(want).to_string(), "{}", r.body);
            let max = want.iter().copied().fold(0.0, f32::max);
            let confidence = p["confidence"].as_f64().unwrap() as f32;
            assert!((confidence - max).abs() < 1e-4, "confidence {confidence} vs {max}");
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
    assert_eq!(metric(&metrics, "cascade_escalations_total{", &["result=\"ok\""]), Some(3.0));
    node.shutdown().await.unwrap();
}
