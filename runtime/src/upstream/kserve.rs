//! A KServe v2 / Open Inference Protocol REST server as an upstream (Triton, KServe, Seldon
//! MLServer): how central capacity scales past one machine, on an engine that already exists.
//!
//! # Exchange
//!
//! One escalation is one `POST {url}/v2/models/{model}/infer` with the request's input
//! tensors as KServe v2 JSON, flat row-major data:
//!
//! ```json
//! {"id": "42", "inputs": [{"name": "image", "datatype": "UINT8", "shape": [28, 28], "data": [0, 3, ...]}]}
//! ```
//!
//! The escalation's deadline becomes the HTTP request's timeout. The response is read
//! strictly: every output needs a name, a datatype this node knows (`FP32`, `UINT8`, `INT8`,
//! `INT32`, `INT64`), a shape, and exactly as many values (flat or nested) as the shape
//! holds, each valid for the datatype; at least one output; `id` and `model_name`, when the
//! server sends them, must be the ones asked for. Binary tensor data (the
//! `binary_data_size` extension) is not requested and not accepted.
//!
//! # Confidence and label
//!
//! A KServe server returns raw model outputs only: the answer carries them by the server's
//! names, with confidence 1.0 (the upstream is the last word) and no label. How they become
//! a route's outputs, and which of them gives the confidence and the label, is the route's
//! `[routes.<name>.from_upstream]` ([`crate::contract`]), not a rule built in here.
//! [`KserveClient::outputs`] reads what the model answers from the server's model metadata
//! (`GET {url}/v2/models/{model}`), so the node can check that mapping at start.
//!
//! # Errors
//!
//! A [`KserveError`] says what went wrong; [`super::EscalationError::Kserve`] adds which
//! server. No response (refused, reset, timed out) and HTTP 5xx are retryable and count
//! against the server's circuit breaker; HTTP 4xx are not retryable and say nothing about
//! the server's health (the request was refused, not the server broken); a 2xx whose body
//! is not a valid answer is not retryable but counts as a failure of the server.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::config::TensorDecl;
use crate::kserve::tensor::{TensorFields, decode_tensor, tensor_values};
use crate::protocol::{EscalationAnswer, EscalationRequest, MAX_TENSORS, NamedTensor};
use crate::tensor::DType;

/// Largest response body accepted, in bytes: as large as a tier protocol frame may be.
const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// Longest error message kept from a server's body.
const MAX_MESSAGE_CHARS: usize = 300;

/// One KServe v2 server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KserveConfig {
    /// Base URL, `http://host:port` perhaps with a path prefix.
    pub url: String,
    /// The model's name on that server.
    pub model: String,
    /// Giving up on a connection attempt (default 1 s).
    pub connect_timeout: Duration,
}

impl KserveConfig {
    /// `model` on the server at `url`, with the default connect timeout.
    pub fn new(url: impl Into<String>, model: impl Into<String>) -> KserveConfig {
        KserveConfig { url: url.into(), model: model.into(), connect_timeout: Duration::from_secs(1) }
    }
}

/// Why a KServe server gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KserveError {
    /// The configured URL cannot be used.
    #[error("url `{url}` is not usable: {reason}")]
    Url {
        /// The URL as configured.
        url: String,
        /// Why.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Client(String),
    /// The request's inputs cannot be written as KServe v2 JSON.
    #[error("cannot encode the request: {0}")]
    Encode(String),
    /// No response arrived: connection refused or reset, or the server closed early.
    #[error("no response: {0}")]
    Connect(String),
    /// The deadline passed before the whole response arrived.
    #[error("no response within the deadline ({0:?})")]
    Timeout(Duration),
    /// The server answered with a non-2xx status.
    #[error("answered HTTP {status}: {message}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// The body's `error` field, or the start of the body.
        message: String,
    },
    /// A 2xx response whose body is not a valid KServe v2 inference response.
    #[error("invalid response: {0}")]
    Response(String),
}

impl KserveError {
    /// Whether trying again (on this or another server) could help.
    pub fn retryable(&self) -> bool {
        match self {
            KserveError::Connect(_) | KserveError::Timeout(_) => true,
            KserveError::Status { status, .. } => *status >= 500,
            KserveError::Url { .. }
            | KserveError::Client(_)
            | KserveError::Encode(_)
            | KserveError::Response(_) => false,
        }
    }

    /// Whether the failure says the server is unhealthy (and should count against its
    /// circuit breaker); `None` when the request never reached it.
    pub fn server_failed(&self) -> Option<bool> {
        match self {
            KserveError::Url { .. } | KserveError::Client(_) | KserveError::Encode(_) => None,
            KserveError::Connect(_) | KserveError::Timeout(_) | KserveError::Response(_) => Some(true),
            KserveError::Status { status, .. } => Some(*status >= 500),
        }
    }

    /// Whether the server itself answered (an HTTP status or a body), as opposed to no
    /// response or a local failure.
    pub fn answered(&self) -> bool {
        matches!(self, KserveError::Status { .. } | KserveError::Response(_))
    }
}

/// Sends escalations to one model on one KServe v2 server.
#[derive(Debug, Clone)]
pub struct KserveClient {
    http: reqwest::Client,
    infer_url: String,
    metadata_url: String,
    server: String,
    model: String,
}

impl KserveClient {
    /// A client for `config.model` at `config.url`. Connects lazily.
    pub fn new(config: &KserveConfig) -> Result<KserveClient, KserveError> {
        let bad = |reason: &str| KserveError::Url { url: config.url.clone(), reason: reason.to_owned() };
        let url = reqwest::Url::parse(&config.url).map_err(|e| bad(&e.to_string()))?;
        if url.scheme() != "http" {
            return Err(bad("only http:// is supported"));
        }
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
            return Err(bad("no host"));
        };
        let server = format!("{host}:{port}");
        let metadata_url = format!("{}/v2/models/{}", url.as_str().trim_end_matches('/'), config.model);
        let infer_url = format!("{metadata_url}/infer");
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            // Close idle connections before the server does (uvicorn-based servers such as
            // KServe's and MLServer's default to 5 s), so a request never races a server
            // closing the connection it was about to reuse.
            .pool_idle_timeout(Duration::from_secs(4))
            .build()
            .map_err(|e| KserveError::Client(e.to_string()))?;
        Ok(KserveClient { http, infer_url, metadata_url, server, model: config.model.clone() })
    }

    /// The server's `host:port`, for messages and as the tier name.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The outputs the model answers, from the server's model metadata, within `timeout`.
    pub async fn outputs(&self, timeout: Duration) -> Result<Vec<TensorDecl>, KserveError> {
        let exchange = async {
            let response = self
                .http
                .get(&self.metadata_url)
                .send()
                .await
                .map_err(|e| KserveError::Connect(error_chain(&e)))?;
            let status = response.status().as_u16();
            Ok::<_, KserveError>((status, read_limited(response).await?))
        };
        let (status, bytes) =
            tokio::time::timeout(timeout, exchange).await.map_err(|_| KserveError::Timeout(timeout))??;
        if !(200..300).contains(&status) {
            return Err(KserveError::Status { status, message: error_message(&bytes) });
        }
        decode_metadata(&bytes)
    }

    /// Sends `request` and reads the answer, by `deadline`.
    pub async fn infer(
        &self,
        request: &EscalationRequest,
        deadline: Instant,
    ) -> Result<EscalationAnswer, KserveError> {
        let body = encode_request(request)?;
        let timeout = deadline.saturating_duration_since(Instant::now());
        if timeout.is_zero() {
            return Err(KserveError::Timeout(timeout));
        }
        let started = Instant::now();
        let exchange = async {
            let response = self
                .http
                .post(&self.infer_url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await
                .map_err(|e| KserveError::Connect(error_chain(&e)))?;
            let status = response.status().as_u16();
            let bytes = read_limited(response).await?;
            Ok::<_, KserveError>((status, bytes))
        };
        // One timer for the whole exchange, body included: a server that trickles its answer
        // must not outlive the deadline.
        let (status, bytes) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| KserveError::Timeout(started.elapsed()))??;
        if !(200..300).contains(&status) {
            return Err(KserveError::Status { status, message: error_message(&bytes) });
        }
        decode_response(&bytes, request.id, &self.model)
    }
}

/// The error and its causes on one line: reqwest's own message alone ("error sending
/// request") does not say whether the connection was refused or reset.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, KserveError> {
    if response.content_length().is_some_and(|n| n > MAX_RESPONSE_BYTES as u64) {
        return Err(KserveError::Response(format!("body larger than {MAX_RESPONSE_BYTES} bytes")));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| KserveError::Connect(error_chain(&e)))? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(KserveError::Response(format!("body larger than {MAX_RESPONSE_BYTES} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The `error` field of a KServe error body, or the start of whatever the body is.
pub(crate) fn error_message(body: &[u8]) -> String {
    let from_json = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_owned)));
    let text = from_json.unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    let mut short: String = text.chars().take(MAX_MESSAGE_CHARS).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

/// The KServe v2 JSON body for `request`: its id (as a string) and every input tensor.
fn encode_request(request: &EscalationRequest) -> Result<Vec<u8>, KserveError> {
    let inputs = request
        .inputs
        .iter()
        .map(|t| {
            let data = tensor_values(&t.tensor)
                .map_err(|why| KserveError::Encode(format!("input `{}`: {why}", t.name)))?;
            Ok(json!({
                "name": t.name,
                "datatype": t.tensor.dtype().kserve_name(),
                "shape": t.tensor.shape(),
                "data": data,
            }))
        })
        .collect::<Result<Vec<Value>, KserveError>>()?;
    let body = json!({ "id": request.id.to_string(), "inputs": inputs });
    serde_json::to_vec(&body).map_err(|e| KserveError::Encode(e.to_string()))
}

/// Reads a 2xx body as the answer to request `id` for `model`. See the module doc.
pub(crate) fn decode_response(body: &[u8], id: u64, model: &str) -> Result<EscalationAnswer, KserveError> {
    let bad = |m: String| KserveError::Response(m);
    let value: Value = serde_json::from_slice(body).map_err(|e| bad(format!("body is not JSON: {e}")))?;
    let obj = value.as_object().ok_or_else(|| bad("body: expected a JSON object".into()))?;
    if let Some(name) = obj.get("model_name")
        && name.as_str() != Some(model)
    {
        return Err(bad(format!("model_name: {name} is not the model asked for (`{model}`)")));
    }
    if let Some(got) = obj.get("id")
        && got.as_str() != Some(id.to_string().as_str())
    {
        return Err(bad(format!("id: {got} is not the id sent (\"{id}\")")));
    }
    let outputs = match obj.get("outputs") {
        None | Some(Value::Null) => return Err(bad("outputs: missing".into())),
        Some(Value::Array(a)) if a.is_empty() => return Err(bad("outputs: empty".into())),
        Some(Value::Array(a)) if a.len() > MAX_TENSORS => {
            return Err(bad(format!("outputs: {} tensors, more than {MAX_TENSORS}", a.len())));
        }
        Some(Value::Array(a)) => a,
        Some(_) => return Err(bad("outputs: expected an array of tensors".into())),
    };
    let outputs = outputs
        .iter()
        .enumerate()
        .map(|(i, t)| decode_output(i, t).map_err(bad))
        .collect::<Result<Vec<NamedTensor>, KserveError>>()?;
    let model_version = match obj.get("model_version").and_then(Value::as_str) {
        Some(v) if !v.is_empty() => format!("{model}@{v}"),
        _ => model.to_owned(),
    };
    Ok(EscalationAnswer { id, outputs, confidence: 1.0, label: None, model_version, timings: Vec::new() })
}

fn decode_output(i: usize, t: &Value) -> Result<NamedTensor, String> {
    let t = t.as_object().ok_or_else(|| format!("outputs[{i}]: expected an object"))?;
    let (name, tensor) = decode_tensor("outputs", i, TensorFields::from_object(t))?;
    Ok(NamedTensor { name, tensor })
}

/// The outputs a model's metadata (`GET /v2/models/{model}`) says it answers, with `-1`
/// dimensions as "any size"; outputs of a datatype this node does not know are left out (no
/// route can use them). See [`KserveClient::outputs`].
pub(crate) fn decode_metadata(body: &[u8]) -> Result<Vec<TensorDecl>, KserveError> {
    let bad = |m: String| KserveError::Response(format!("model metadata: {m}"));
    let value: Value = serde_json::from_slice(body).map_err(|e| bad(format!("body is not JSON: {e}")))?;
    let outputs =
        value.get("outputs").and_then(Value::as_array).ok_or_else(|| bad("no `outputs` array".into()))?;
    outputs
        .iter()
        .take(MAX_TENSORS)
        .enumerate()
        .filter_map(|(i, o)| {
            let name = o.get("name").and_then(Value::as_str);
            let dtype = o.get("datatype").and_then(Value::as_str).and_then(DType::from_kserve_name);
            let shape = o.get("shape").and_then(Value::as_array).map(|dims| {
                dims.iter().map(|d| d.as_i64().map(|d| usize::try_from(d).ok())).collect::<Option<Vec<_>>>()
            });
            match (name, shape) {
                (Some(name), Some(Some(shape))) => {
                    dtype.map(|dtype| Ok(TensorDecl { name: name.to_owned(), dtype, shape }))
                }
                _ => Some(Err(bad(format!("outputs[{i}] needs a name and a shape of integers")))),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Tensor;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn request(deadline: Duration) -> EscalationRequest {
        EscalationRequest {
            id: 42,
            route: "digits".into(),
            inputs: vec![
                NamedTensor {
                    name: "image".into(),
                    tensor: Tensor::from_u8(vec![2, 2], vec![0, 1, 254, 255]).unwrap(),
                },
                NamedTensor { name: "scale".into(), tensor: Tensor::from_f32(vec![1], &[0.5]).unwrap() },
            ],
            budget_us: crate::protocol::budget_us(deadline),
            trace: None,
            node_id: "edge".into(),
            local_confidence: Some(0.4),
        }
    }

    #[test]
    fn requests_carry_every_input_as_kserve_json() {
        let body: Value =
            serde_json::from_slice(&encode_request(&request(Duration::from_secs(1))).unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"id": "42", "inputs": [
                {"name": "image", "datatype": "UINT8", "shape": [2, 2], "data": [0, 1, 254, 255]},
                {"name": "scale", "datatype": "FP32", "shape": [1], "data": [0.5]},
            ]})
        );
        let mut nan = request(Duration::from_secs(1));
        nan.inputs[1].tensor = Tensor::from_f32(vec![1], &[f32::NAN]).unwrap();
        let err = encode_request(&nan).unwrap_err();
        assert!(matches!(&err, KserveError::Encode(m) if m.contains("input `scale`")), "{err}");
        assert_eq!(err.server_failed(), None);
    }

    #[test]
    fn answers_carry_the_raw_outputs_as_the_last_word() {
        let body = br#"{"model_name":"central","model_version":"3","id":"42","outputs":[
            {"name":"logits","datatype":"FP32","shape":[1,3],"data":[[1.0, 3.0, 2.0]]}]}"#;
        let answer = decode_response(body, 42, "central").unwrap();
        assert_eq!(answer.id, 42);
        // No rule reads a label or a confidence into logits here: the route's mapping does.
        assert_eq!((answer.confidence, answer.label), (1.0, None));
        assert_eq!(answer.model_version, "central@3");
        assert_eq!(answer.outputs[0].name, "logits");
        assert_eq!(answer.outputs[0].tensor.to_f32().unwrap(), vec![1.0, 3.0, 2.0]);

        let body = br#"{"outputs":[{"name":"y","datatype":"INT64","shape":[2],"data":[7,-8]}]}"#;
        let answer = decode_response(body, 1, "m").unwrap();
        assert_eq!((answer.confidence, answer.label, answer.model_version.as_str()), (1.0, None, "m"));
        let bytes = answer.outputs[0].tensor.data();
        assert_eq!(i64::from_le_bytes(bytes[8..16].try_into().unwrap()), -8);
    }

    #[test]
    fn malformed_responses_are_refused_with_the_reason() {
        let cases: &[(&[u8], &str)] = &[
            (b"not json", "not JSON"),
            (b"[1]", "expected a JSON object"),
            (br#"{"model_name":"m"}"#, "outputs: missing"),
            (br#"{"outputs":[]}"#, "outputs: empty"),
            (br#"{"model_name":"other","outputs":[]}"#, "not the model asked for"),
            (br#"{"id":"7","outputs":[]}"#, "not the id sent"),
            (
                br#"{"outputs":[{"name":"y","datatype":"BF16","shape":[1],"data":[1]}]}"#,
                "unknown datatype `BF16`",
            ),
            (
                br#"{"outputs":[{"name":"y","datatype":"FP32","shape":[1,3],"data":[1,2]}]}"#,
                "2 values for shape [1, 3]",
            ),
            (
                br#"{"outputs":[{"name":"y","datatype":"UINT8","shape":[1],"data":[300]}]}"#,
                "300 is not a valid UINT8",
            ),
            (br#"{"outputs":[{"name":"y","datatype":"FP32","shape":[1]}]}"#, "outputs[0].data: missing"),
            (br#"{"outputs":[{"name":"y","datatype":"FP32","shape":[-1],"data":[]}]}"#, "non-negative"),
            (br#"{"outputs":[{"datatype":"FP32","shape":[1],"data":[1]}]}"#, "outputs[0].name"),
            (br#"{"outputs":[{"name":"y","datatype":"FP32","shape":[1],"data":["1"]}]}"#, "expected numbers"),
        ];
        for (body, needle) in cases {
            let err = decode_response(body, 1, "m").unwrap_err();
            assert!(matches!(err, KserveError::Response(_)), "{err}");
            assert!(err.to_string().contains(needle), "`{err}` does not say `{needle}`");
            assert!(!err.retryable());
            assert_eq!(err.server_failed(), Some(true));
        }
    }

    /// A one-shot HTTP server on loopback: answers the first request with `status` and `body`
    /// and hands back the request it read.
    async fn serve_once(
        status: &'static str,
        body: &'static str,
    ) -> (String, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut received = Vec::new();
            let mut buf = [0u8; 4096];
            // Headers, then as many body bytes as Content-Length says.
            loop {
                let n = socket.read(&mut buf).await.unwrap();
                received.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&received).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_owned)
                        })
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if received.len() >= end + 4 + length || n == 0 {
                        break;
                    }
                }
            }
            let reply = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(reply.as_bytes()).await.unwrap();
            socket.shutdown().await.unwrap();
            String::from_utf8_lossy(&received).to_string()
        });
        (url, task)
    }

    #[tokio::test]
    async fn a_real_exchange_posts_to_the_model_and_reads_the_answer() {
        let (url, server) = serve_once(
            "200 OK",
            r#"{"model_name":"central","id":"42","outputs":[{"name":"logits","datatype":"FP32","shape":[1,2],"data":[0.0,1.0]}]}"#,
        )
        .await;
        let client = KserveClient::new(&KserveConfig::new(format!("{url}/"), "central")).unwrap();
        assert_eq!(format!("http://{}", client.server()), url);
        let answer = client
            .infer(&request(Duration::from_secs(5)), Instant::now() + Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(answer.outputs[0].tensor.to_f32().unwrap(), vec![0.0, 1.0]);
        let received = server.await.unwrap();
        assert!(received.starts_with("POST /v2/models/central/infer HTTP/1.1\r\n"), "{received}");
        let body = &received[received.find("\r\n\r\n").unwrap() + 4..];
        let body: Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["inputs"][0]["data"], json!([0, 1, 254, 255]));
    }

    #[tokio::test]
    async fn error_statuses_carry_the_servers_message_and_retryability() {
        let (url, _server) =
            serve_once("400 Bad Request", r#"{"error":"input `image` has the wrong shape"}"#).await;
        let client = KserveClient::new(&KserveConfig::new(url, "central")).unwrap();
        let err = client
            .infer(&request(Duration::from_secs(5)), Instant::now() + Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            KserveError::Status { status: 400, message: "input `image` has the wrong shape".into() }
        );
        assert!(!err.retryable());
        assert_eq!(err.server_failed(), Some(false));

        let (url, _server) = serve_once("503 Service Unavailable", "model not ready").await;
        let client = KserveClient::new(&KserveConfig::new(url, "central")).unwrap();
        let err = client
            .infer(&request(Duration::from_secs(5)), Instant::now() + Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(err, KserveError::Status { status: 503, message: "model not ready".into() });
        assert!(err.retryable());
        assert_eq!(err.server_failed(), Some(true));
    }

    #[tokio::test]
    async fn no_server_and_a_silent_server_are_retryable() {
        // A port nothing listens on any more.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let client = KserveClient::new(&KserveConfig::new(format!("http://{addr}"), "m")).unwrap();
        let err = client
            .infer(&request(Duration::from_secs(5)), Instant::now() + Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, KserveError::Connect(_)), "{err}");
        assert!(err.retryable());

        // Accepts, reads, never answers: the deadline ends the wait.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _silent = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(10)).await;
            drop(socket);
        });
        let client = KserveClient::new(&KserveConfig::new(format!("http://{addr}"), "m")).unwrap();
        let started = Instant::now();
        let err = client
            .infer(&request(Duration::from_millis(200)), Instant::now() + Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, KserveError::Timeout(_)), "{err}");
        assert!(err.retryable());
        assert!(started.elapsed() < Duration::from_secs(2), "the deadline bounds the wait");
    }

    #[test]
    fn model_metadata_gives_the_outputs_the_model_answers() {
        let body = br#"{"name":"central","platform":"onnx","inputs":[],"outputs":[
            {"name":"logits","datatype":"FP32","shape":[-1,10]},
            {"name":"embedding","datatype":"BF16","shape":[-1,64]}]}"#;
        let outputs = decode_metadata(body).unwrap();
        assert_eq!(
            outputs,
            vec![TensorDecl { name: "logits".into(), dtype: DType::F32, shape: vec![None, Some(10)] }]
        );
        for (body, needle) in [
            (&br#"{"name":"m"}"#[..], "no `outputs` array"),
            (br#"{"outputs":[{"name":"y","datatype":"FP32","shape":["a"]}]}"#, "outputs[0]"),
            (b"<html>", "not JSON"),
        ] {
            let err = decode_metadata(body).unwrap_err();
            assert!(err.to_string().contains(needle), "`{err}` does not say `{needle}`");
        }
    }

    #[tokio::test]
    async fn metadata_is_read_from_the_models_endpoint() {
        let (url, server) = serve_once(
            "200 OK",
            r#"{"name":"central","outputs":[{"name":"logits","datatype":"FP32","shape":[1,2]}]}"#,
        )
        .await;
        let client = KserveClient::new(&KserveConfig::new(url, "central")).unwrap();
        let outputs = client.outputs(Duration::from_secs(5)).await.unwrap();
        assert_eq!(outputs[0].name, "logits");
        let received = server.await.unwrap();
        assert!(received.starts_with("GET /v2/models/central HTTP/1.1\r\n"), "{received}");
    }

    #[test]
    fn unusable_urls_are_refused() {
        for url in ["not a url", "https://example.invalid:443", "unix:/tmp/socket"] {
            let err = KserveClient::new(&KserveConfig::new(url, "m")).unwrap_err();
            assert!(matches!(err, KserveError::Url { .. }), "{err}");
        }
    }
}
