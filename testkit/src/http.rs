//! A small HTTP client for nodes under test, and readers of what they answer.

use std::net::SocketAddr;

use serde_json::Value;

/// A client with a 10 s timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build().unwrap()
}

/// What a node answered.
#[derive(Debug)]
pub struct Response {
    /// The HTTP status.
    pub status: u16,
    /// `Retry-After`, in seconds, if sent.
    pub retry_after: Option<u64>,
    /// The JSON body (`null` if it was not JSON).
    pub body: Value,
}

/// POSTs `body` as JSON to `route`'s infer endpoint.
pub async fn post(client: &reqwest::Client, addr: SocketAddr, route: &str, body: &[u8]) -> Response {
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

/// GETs `path`: the status and the body as text.
pub async fn get_text(client: &reqwest::Client, addr: SocketAddr, path: &str) -> (u16, String) {
    let r = client.get(format!("http://{addr}{path}")).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The value of the first Prometheus sample starting with `prefix` and containing every label.
pub fn metric(text: &str, prefix: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix) && labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The response's `outputs[0].data` as floats.
pub fn output_values(body: &Value) -> Vec<f32> {
    body["outputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect()
}

/// Asserts two vectors agree to 1e-4.
pub fn assert_close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-4, "{a:?} vs {b:?}");
    }
}
