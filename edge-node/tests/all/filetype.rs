//! The second example, in another domain: examples/filetype-detector with Google's Magika
//! content-type model (taken from the `magika` package by tools/setup.sh), served by a real
//! node from examples/configs/filetype.toml, answers as the `magika` package itself does.

use std::path::{Path, PathBuf};
use std::process::Command;

use cascade_runtime::config;
use cascade_runtime::guest_build::GuestBuilder;
use cascade_testkit::{client, onnx_python, post, repo};
use edge_node::serve::Server;
use serde_json::{Value, json};

/// What the `magika` package says of each file: its model's label and score (`dl`, before
/// the package's own overrides), by the package's own feature extraction and onnxruntime.
fn magika_says(python: &Path, files: &[PathBuf]) -> Vec<(String, f64)> {
    let script = r#"
import json, sys
from magika import Magika
for result in Magika().identify_paths(sys.argv[1:]):
    dl = result.prediction.dl
    print(json.dumps({"label": str(dl.label), "score": result.prediction.score}))
"#;
    let out = Command::new(python).arg("-c").arg(script).args(files).output().unwrap();
    assert!(out.status.success(), "magika failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            (v["label"].as_str().unwrap().to_owned(), v["score"].as_f64().unwrap())
        })
        .collect()
}

/// What a client sends for `file`: all of it, or, past 8 KiB, its first and last 4 KiB
/// joined (all the model reads, as the example says).
fn content(file: &Path) -> Vec<u8> {
    let bytes = std::fs::read(file).unwrap();
    if bytes.len() <= 8192 {
        return bytes;
    }
    [&bytes[..4096], &bytes[bytes.len() - 4096..]].concat()
}

fn body(content: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "inputs": [{ "name": "content", "datatype": "UINT8", "shape": [content.len()], "data": content }],
        "outputs": [{ "name": "probabilities" }],
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_filetype_example_answers_as_magika_does() {
    let python = onnx_python();
    let example = repo().join("examples/configs/filetype.toml");
    let model = repo().join("target/third-party/magika_standard_v3_3.onnx");
    assert!(model.exists(), "{} is missing; run tools/setup.sh", model.display());

    // The example config as written, with the plugin built here and any free port.
    let built = GuestBuilder::default().build(&repo().join("examples/filetype-detector")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("filetype_detector.wasm");
    std::fs::write(&wasm, &built.component).unwrap();
    let mut validated = config::load(&example).unwrap();
    validated.plugins.get_mut("filetype").unwrap().path = wasm;
    validated.settings.http = "127.0.0.1:0".parse().unwrap();
    // The labels in the example are the package's, in its order.
    let labels = validated.plugins["filetype"].config["labels"].split_whitespace().count();
    assert_eq!(labels, 214);
    let server = Server::start(validated.resolve().unwrap()).await.unwrap();
    let addr = server.http_addr();
    let c = client();

    // Files of several kinds: text in four languages, JSON, a wasm component, an ONNX model.
    let files: Vec<PathBuf> = [
        "runtime/src/contract.rs",
        "README.md",
        "Cargo.toml",
        "tools/setup.sh",
        "tools/kserve_upstream.py",
        "deploy/grafana/cascade.json",
        "target/third-party/magika_standard_v3_3.onnx",
    ]
    .iter()
    .map(|f| repo().join(f))
    .chain([dir.path().join("filetype_detector.wasm")])
    .collect();
    let expected = magika_says(&python, &files);
    assert_eq!(expected.len(), files.len());
    let mut seen = std::collections::BTreeSet::new();
    for (file, (label, score)) in files.iter().zip(&expected) {
        let r = post(&c, addr, "filetype", &body(&content(file))).await;
        assert_eq!(r.status, 200, "{}: {}", file.display(), r.body);
        let p = &r.body["parameters"];
        assert_eq!(p["label"], label.as_str(), "{}: {}", file.display(), r.body);
        let confidence = p["confidence"].as_f64().unwrap();
        assert!(
            (confidence - score).abs() < 1e-4,
            "{}: confidence {confidence} vs magika's {score}",
            file.display()
        );
        assert_eq!(r.body["outputs"][0]["name"], "probabilities");
        assert_eq!(r.body["outputs"][0]["shape"], json!([1, 214]));
        // Below Magika's medium-confidence threshold the node says it is unsure.
        assert_eq!(p["degraded"], confidence < 0.5, "{}", r.body);
        seen.insert(label.clone());
    }
    assert!(seen.len() >= 5, "the files should be of several kinds: {seen:?}");

    // Too little to go on: refused, saying what to send.
    let r = post(&c, addr, "filetype", &body(b"   \n  hi")).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body["error"].as_str().unwrap().contains("fewer than 8 bytes"), "{}", r.body);
    server.shutdown().await.unwrap();
}
