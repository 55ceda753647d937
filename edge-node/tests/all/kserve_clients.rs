//! Existing KServe v2 clients work unchanged: the binary tensor data extension their
//! libraries use by default, the JSON bodies of the health endpoints, and KServe's own
//! Python client (`tools/kserve_client.py`, from the venv tools/setup.sh installs).

use std::process::Command;

use cascade_runtime::ReferenceModel;
use cascade_testkit::{
    assert_close, client, digits, edge, get_text, kserve_python_or_skip, probabilities, repo, resolve,
};
use edge_node::serve::Server;
use serde_json::{Value, json};

/// A POST with the binary extension's header, answered as (status, headers, body bytes).
async fn post_binary(
    c: &reqwest::Client,
    addr: std::net::SocketAddr,
    json: &Value,
    raw: &[u8],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut body = serde_json::to_vec(json).unwrap();
    let json_length = body.len();
    body.extend_from_slice(raw);
    let r = c
        .post(format!("http://{addr}/v2/models/digits/infer"))
        .header("content-type", "application/octet-stream")
        .header("inference-header-content-length", json_length.to_string())
        .body(body)
        .send()
        .await
        .unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, headers, r.bytes().await.unwrap().to_vec())
}

/// A binary answer's JSON header and raw bytes.
fn split_answer(headers: &reqwest::header::HeaderMap, body: &[u8]) -> (Value, Vec<u8>) {
    let n: usize = headers["inference-header-content-length"].to_str().unwrap().parse().unwrap();
    (serde_json::from_slice(&body[..n]).unwrap(), body[n..].to_vec())
}

/// Binary input and output tensors, as the extension frames them; the same image sent as
/// JSON hits the cache entry the binary one made (same input bytes, same key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_tensor_data_in_and_out() {
    let server = Server::start(resolve("binary.toml", &edge(0.0, None))).await.unwrap();
    let addr = server.http_addr();
    let c = client();
    let image = 5;
    let expected = &probabilities(ReferenceModel::EdgeInt8, &[image])[0];

    let request = json!({
        "id": "bin",
        "inputs": [{ "name": "image", "shape": [28, 28], "datatype": "UINT8", "parameters": { "binary_data_size": 784 } }],
        "parameters": { "binary_data_output": true },
    });
    let (status, headers, body) = post_binary(&c, addr, &request, digits().image(image)).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["content-type"], "application/octet-stream");
    let (answer, raw) = split_answer(&headers, &body);
    assert_eq!(answer["id"], "bin");
    assert_eq!(answer["parameters"]["cache"], "miss");
    let output = &answer["outputs"][0];
    assert_eq!((output["datatype"].as_str(), output.get("data")), (Some("FP32"), None));
    assert_eq!(output["parameters"]["binary_data_size"], 40);
    let values: Vec<f32> = raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_close(&values, expected);

    // The same pixels as JSON numbers, answered as JSON: the binary request's cache entry.
    let as_json = json!({ "inputs": [{ "name": "image", "shape": [28, 28], "datatype": "UINT8", "data": digits().image(image) }] });
    let r = c.post(format!("http://{addr}/v2/models/digits/infer")).json(&as_json).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "application/json");
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["parameters"]["cache"], "hit");
    let values: Vec<f32> =
        answer["outputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    assert_close(&values, expected);

    // Outputs picked by name; a name the route does not answer with is refused, naming it.
    let name = output["name"].as_str().unwrap();
    let pick = |name: &str| {
        json!({
            "inputs": [{ "name": "image", "shape": [28, 28], "datatype": "UINT8", "parameters": { "binary_data_size": 784 } }],
            "outputs": [{ "name": name, "parameters": { "binary_data": true } }],
        })
    };
    let (status, headers, body) = post_binary(&c, addr, &pick(name), digits().image(image)).await;
    assert_eq!(status, 200);
    assert_eq!(split_answer(&headers, &body).1.len(), 40);
    let (status, _, body) = post_binary(&c, addr, &pick("nope"), digits().image(image)).await;
    assert_eq!(status, 400);
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert!(error["error"].as_str().unwrap().contains("outputs[0].name"), "{error}");

    // Framing errors are 400s naming what is wrong.
    let (status, _, body) = post_binary(&c, addr, &request, &digits().image(image)[..700]).await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("binary_data_size: 784 bytes, but 700 are left"));

    // Health answers carry JSON bodies too (KServe's client reads them).
    for (path, body) in [
        ("/v2/health/live", json!({ "live": true })),
        ("/v2/health/ready", json!({ "ready": true })),
        ("/v2/models/digits/ready", json!({ "name": "digits", "ready": true })),
    ] {
        let (status, text) = get_text(&c, addr, path).await;
        assert_eq!((status, serde_json::from_str::<Value>(&text).unwrap()), (200, body), "{path}");
    }
    server.shutdown().await.unwrap();
}

/// KServe's own Python client, unchanged: health, readiness, and inference with its default
/// binary tensors, with JSON tensors, and with one output asked for by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_python_client_works_unchanged() {
    let Some(python) = kserve_python_or_skip("the KServe client test") else { return };
    let server = Server::start(resolve("client.toml", &edge(0.0, None))).await.unwrap();
    let addr = server.http_addr();
    let image = 7;
    let pixels: Vec<String> = digits().image(image).iter().map(u8::to_string).collect();
    let script = repo().join("tools/kserve_client.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .arg(format!("http://{addr}"))
            .arg("digits")
            .arg(pixels.join(","))
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the KServe client failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(
        (&got["live"], &got["ready"], &got["model_ready"]),
        (&json!(true), &json!(true), &json!(true))
    );

    let expected = &probabilities(ReferenceModel::EdgeInt8, &[image])[0];
    for way in ["binary", "json", "named"] {
        let outputs = got[way]["outputs"].as_array().unwrap_or_else(|| panic!("{way}: {got}"));
        assert_eq!(outputs.len(), 1, "{way}");
        assert_eq!((outputs[0]["datatype"].as_str(), &outputs[0]["shape"]), (Some("FP32"), &json!([1, 10])));
        let values: Vec<f32> =
            outputs[0]["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert_close(&values, expected);
        let p = &got[way]["parameters"];
        assert_eq!((p["tier"].as_str(), p["escalated"].as_bool()), (Some("edge"), Some(false)), "{way}");
        assert_eq!(p["label"], digits().label(image).to_string(), "{way}");
    }
    // The first way computed the answer; the other two, the same pixels, hit the cache.
    assert_eq!(got["binary"]["parameters"]["cache"], "miss");
    assert_eq!(got["json"]["parameters"]["cache"], "hit");
    server.shutdown().await.unwrap();
}
