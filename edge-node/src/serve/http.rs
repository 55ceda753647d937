//! The HTTP front door: KServe v2 / Open Inference Protocol REST over a [`Node`].
//!
//! Errors are `{"error": "..."}` with the status [`ServeError::status`] gives, and
//! `Retry-After` when admission refused the request.

use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cascade_runtime::kserve_json::{Numbers, TensorFields, decode_tensor, tensor_values};
use cascade_runtime::{ModelInfo, Stage, Tensor, TensorSpec};
use serde_json::{Map, Value, json};

use super::node::{CurrentNode, Reply, ServeError};

/// The router for the node `current` holds (each request takes the node current when it
/// arrives).
pub fn router(node: CurrentNode) -> Router {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{route}", get(model_metadata))
        .route("/v2/models/{route}/ready", get(model_ready))
        .route("/v2/models/{route}/infer", post(infer))
        .route("/metrics", get(metrics))
        .with_state(node)
}

fn error(status: u16, message: impl Into<String>, retry_after: Option<u64>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, axum::Json(json!({ "error": message.into() }))).into_response();
    if let Some(secs) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

fn serve_error(e: &ServeError) -> Response {
    error(e.status(), e.to_string(), e.retry_after_secs())
}

async fn live() -> StatusCode {
    StatusCode::OK
}

/// Ready once the node exists: models are prepared and plugins loaded before it is built.
async fn ready() -> StatusCode {
    StatusCode::OK
}

async fn server_metadata(State(current): State<CurrentNode>) -> Response {
    let node = current.get();
    axum::Json(json!({
        "name": node.name(),
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": [],
    }))
    .into_response()
}

fn tensor_specs(specs: &[TensorSpec]) -> Value {
    specs
        .iter()
        .map(|s| {
            // The batch dimension is implicit in the backend's spec: -1, as KServe writes it.
            let mut shape = vec![json!(-1)];
            shape.extend(s.item_shape.iter().map(|d| json!(d)));
            json!({ "name": s.name, "datatype": s.dtype.kserve_name(), "shape": shape })
        })
        .collect()
}

fn declared_specs(decls: &[cascade_runtime::config::TensorDecl]) -> Value {
    decls
        .iter()
        .map(|d| json!({ "name": d.name, "datatype": d.dtype.kserve_name(), "shape": d.kserve_shape() }))
        .collect()
}

/// A route is served by a plugin, whose input format is its own: the route's declared
/// `inputs`/`outputs` when the config has them, else the tensors of the first model the
/// plugin may call (what the node knows without them).
async fn model_metadata(State(current): State<CurrentNode>, Path(route): Path<String>) -> Response {
    let node = current.get();
    let Some(settings) = node.route(&route) else {
        return serve_error(&ServeError::UnknownRoute(route));
    };
    let models = node.route_models(&route);
    let first = models.first();
    let pick =
        |declared: &[cascade_runtime::config::TensorDecl], model: fn(&ModelInfo) -> &[TensorSpec]| match (
            declared.is_empty(),
            first,
        ) {
            (false, _) => declared_specs(declared),
            (true, Some(m)) => tensor_specs(model(m)),
            (true, None) => json!([]),
        };
    let inputs = pick(&settings.inputs, |m| &m.inputs);
    let outputs = pick(&settings.outputs, |m| &m.outputs);
    let model_names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
    axum::Json(json!({
        "name": route,
        "versions": [],
        "platform": "cascade-wasm",
        "inputs": inputs,
        "outputs": outputs,
        "parameters": { "plugin": settings.plugin, "models": model_names },
    }))
    .into_response()
}

async fn model_ready(State(current): State<CurrentNode>, Path(route): Path<String>) -> Response {
    let node = current.get();
    match node.route(&route) {
        Some(_) => StatusCode::OK.into_response(),
        None => serve_error(&ServeError::UnknownRoute(route)),
    }
}

async fn metrics(State(current): State<CurrentNode>) -> Response {
    let node = current.get();
    if !node.config().settings.telemetry.metrics {
        return error(404, "metrics are disabled (telemetry.metrics = false)", None);
    }
    match node.metrics() {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => error(500, e.to_string(), None),
    }
}

async fn infer(State(current): State<CurrentNode>, Path(route): Path<String>, body: Bytes) -> Response {
    let node = current.get();
    if node.route(&route).is_none() {
        return serve_error(&ServeError::UnknownRoute(route));
    }
    let request = match parse_request(&body) {
        Ok(r) => r,
        Err(message) => return error(400, message, None),
    };
    let result = node.infer(&route, request.inputs, request.parameters).await;
    let t = Instant::now();
    let response = match result {
        Ok(reply) => match response_json(&route, request.id, &reply) {
            Ok(body) => axum::Json(body).into_response(),
            Err(why) => {
                error(500, format!("route `{route}`: the answer cannot be sent as JSON: {why}"), None)
            }
        },
        Err(e) => serve_error(&e),
    };
    node.telemetry().stage(Stage::Response, t.elapsed());
    response
}

/// A parsed inference request.
#[derive(Debug)]
pub struct InferRequest {
    /// The client's request id, echoed back.
    pub id: Option<String>,
    /// Named input tensors.
    pub inputs: Vec<(String, Tensor)>,
    /// String-valued parameters.
    pub parameters: Vec<(String, String)>,
}

/// Parses a KServe v2 JSON inference request; errors name the offending field.
///
/// Well-formed requests take a typed path that reads each tensor's `data` straight into a
/// flat list of numbers instead of a `serde_json::Value` per element (an allocation and a
/// match for each of 784 pixels). Anything the typed path refuses is parsed
/// again as a `Value`, which finds the offending field for the error message.
pub fn parse_request(body: &[u8]) -> Result<InferRequest, String> {
    if let Ok(wire) = serde_json::from_slice::<WireRequest>(body) {
        return build_request(
            wire.id.as_ref(),
            wire.inputs.iter().map(wire_fields),
            wire.parameters.as_ref(),
        );
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("body is not valid JSON: {e}"))?;
    let obj = value.as_object().ok_or("body: expected a JSON object")?;
    let inputs = obj.get("inputs").ok_or("inputs: missing")?;
    let inputs = inputs.as_array().ok_or("inputs: expected an array of tensors")?;
    let tensors = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let t = t.as_object().ok_or_else(|| format!("inputs[{i}]: expected an object"))?;
            Ok(TensorFields::from_object(t))
        })
        .collect::<Result<Vec<_>, String>>()?;
    build_request(obj.get("id"), tensors.into_iter(), obj.get("parameters"))
}

/// A request as the typed path reads it; `data` arrays never become `Value`s.
#[derive(serde::Deserialize)]
struct WireRequest {
    #[serde(default)]
    id: Option<Value>,
    inputs: Vec<WireTensor>,
    #[serde(default)]
    parameters: Option<Value>,
}

#[derive(serde::Deserialize)]
struct WireTensor {
    #[serde(default)]
    name: Option<Value>,
    #[serde(default)]
    shape: Option<Value>,
    #[serde(default)]
    datatype: Option<Value>,
    #[serde(default)]
    data: Option<Numbers>,
}

fn wire_fields(t: &WireTensor) -> TensorFields<'_> {
    TensorFields {
        name: t.name.as_ref(),
        shape: t.shape.as_ref(),
        datatype: t.datatype.as_ref(),
        data: t.data.clone(),
    }
}

fn build_request<'a>(
    id: Option<&Value>,
    inputs: impl ExactSizeIterator<Item = TensorFields<'a>>,
    parameters: Option<&Value>,
) -> Result<InferRequest, String> {
    let id = match id {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("id: expected a string".into()),
    };
    if inputs.len() == 0 {
        return Err("inputs: expected at least one tensor".into());
    }
    let inputs =
        inputs.enumerate().map(|(i, t)| decode_tensor("inputs", i, t)).collect::<Result<Vec<_>, _>>()?;
    let parameters = match parameters {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
            .collect(),
        Some(_) => return Err("parameters: expected an object".into()),
    };
    Ok(InferRequest { id, inputs, parameters })
}

/// The response body; an output JSON cannot carry (a NaN) is an error naming it.
fn response_json(route: &str, id: Option<String>, reply: &Reply) -> Result<Value, String> {
    let outputs = reply
        .outputs
        .iter()
        .map(|(name, t)| {
            let data = tensor_values(t).map_err(|why| format!("output `{name}`: {why}"))?;
            Ok(json!({ "name": name, "datatype": t.dtype().kserve_name(), "shape": t.shape(), "data": data }))
        })
        .collect::<Result<Vec<Value>, String>>()?;
    let mut parameters = Map::new();
    parameters.insert("confidence".into(), json!(reply.confidence));
    parameters.insert("tier".into(), json!(reply.tier));
    parameters.insert("escalated".into(), json!(reply.escalated));
    parameters.insert("degraded".into(), json!(reply.degraded.is_some()));
    if let Some(d) = &reply.degraded {
        parameters.insert("degraded_reason".into(), json!(d.reason.name()));
        if let Some(detail) = &d.detail {
            parameters.insert("degraded_detail".into(), json!(detail));
        }
    }
    parameters.insert("cache".into(), json!(reply.cache.name()));
    if let Some(label) = &reply.label {
        parameters.insert("label".into(), json!(label));
    }
    let mut out = json!({ "model_name": route, "outputs": outputs, "parameters": parameters });
    if let (Some(id), Some(obj)) = (id, out.as_object_mut()) {
        obj.insert("id".into(), json!(id));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_and_flat_data_parse_the_same() {
        let flat = br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"UINT8","data":[1,2,3,4]}]}"#;
        let nested = br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"UINT8","data":[[1,2],[3,4]]}]}"#;
        let a = parse_request(flat).unwrap();
        let b = parse_request(nested).unwrap();
        assert_eq!(a.inputs, b.inputs);
        assert_eq!(a.inputs[0].1.data(), &[1, 2, 3, 4]);
    }

    #[test]
    fn the_typed_path_and_the_value_path_agree() {
        let bodies: [&[u8]; 4] = [
            br#"{"id":"a","inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,-2.5],[3e2,4]]}],"parameters":{"k":"v","n":3}}"#,
            br#"{"inputs":[{"name":"x","shape":[3],"datatype":"INT64","data":[-9223372036854775808,0,9223372036854775807]}]}"#,
            br#"{"inputs":[{"name":"x","shape":[2],"datatype":"INT8","data":[-128,127]},{"name":"y","shape":[1],"datatype":"INT32","data":[7],"parameters":{}}]}"#,
            br#"{"inputs":[{"name":"x","shape":[1],"datatype":"UINT8","data":[255]}],"outputs":[{"name":"p"}]}"#,
        ];
        for body in bodies {
            let typed = parse_request(body).unwrap();
            let wire: WireRequest = serde_json::from_slice(body).unwrap();
            assert!(!wire.inputs.is_empty());
            // The Value path, forced by a body the typed path refuses (a duplicate key).
            let text = std::str::from_utf8(body).unwrap();
            let forced = format!("{{\"inputs\": 1, {}", &text[1..]);
            assert!(serde_json::from_str::<WireRequest>(&forced).is_err());
            let reparsed = parse_request(forced.as_bytes()).unwrap();
            assert_eq!(
                (typed.id, typed.inputs, typed.parameters),
                (reparsed.id, reparsed.inputs, reparsed.parameters)
            );
        }
    }

    #[test]
    fn data_problems_are_reported_not_fatal_to_the_parse() {
        let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
        let cases = [
            (r#"["a",1]"#.to_owned(), "expected numbers, found \"a\""),
            ("[1,{}]".to_owned(), "found an object"),
            ("[1,null]".to_owned(), "found null"),
            (deep, "nested too deeply"),
            ("[1.5]".to_owned(), "1.5 is not a valid UINT8"),
        ];
        for (data, expected) in cases {
            let body =
                format!(r#"{{"inputs":[{{"name":"x","shape":[1],"datatype":"UINT8","data":{data}}}]}}"#);
            let e = parse_request(body.as_bytes()).unwrap_err();
            assert!(e.starts_with("inputs[0].data") && e.contains(expected), "{data}: {e}");
        }
    }

    proptest::proptest! {
        /// Whatever the bytes, the parser answers with a request or an error, never a panic.
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = parse_request(&body);
        }

        /// Well-formed requests come back with exactly the values sent.
        #[test]
        fn well_formed_requests_round_trip(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..64)) {
            let body = json!({ "inputs": [{ "name": "x", "shape": [data.len()], "datatype": "UINT8", "data": data }] });
            let parsed = parse_request(&serde_json::to_vec(&body).unwrap()).unwrap();
            proptest::prop_assert_eq!(parsed.inputs[0].1.data(), &data[..]);
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases: [(&[u8], &str); 6] = [
            (b"{", "not valid JSON"),
            (br#"{"inputs":{}}"#, "inputs:"),
            (br#"{"inputs":[{"name":"x","shape":[2],"datatype":"UINT8","data":[1]}]}"#, "inputs[0].data"),
            (br#"{"inputs":[{"name":"x","shape":[1],"datatype":"BF16","data":[1]}]}"#, "inputs[0].datatype"),
            (br#"{"inputs":[{"name":"x","shape":[-1],"datatype":"UINT8","data":[1]}]}"#, "inputs[0].shape"),
            (
                br#"{"inputs":[{"name":"x","shape":[1],"datatype":"UINT8","data":[300]}]}"#,
                "inputs[0].data[0]",
            ),
        ];
        for (body, field) in cases {
            let e = parse_request(body).unwrap_err();
            assert!(e.contains(field), "{e:?} should name {field}");
        }
    }

    #[test]
    fn outputs_round_trip_to_json_numbers() {
        let t = Tensor::from_f32(vec![1, 2], &[0.25, 0.75]).unwrap();
        assert_eq!(tensor_values(&t).unwrap(), vec![json!(0.25), json!(0.75)]);
        let nan = Tensor::from_f32(vec![1], &[f32::NAN]).unwrap();
        assert!(tensor_values(&nan).unwrap_err().contains("element 0 is NaN"));
    }
}
