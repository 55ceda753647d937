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
use cascade_runtime::{DType, ModelInfo, Stage, Tensor, TensorSpec, element_count};
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
        Ok(reply) => axum::Json(response_json(&route, request.id, &reply)).into_response(),
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
pub fn parse_request(body: &[u8]) -> Result<InferRequest, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("body is not valid JSON: {e}"))?;
    let obj = value.as_object().ok_or("body: expected a JSON object")?;
    let id = match obj.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("id: expected a string".into()),
    };
    let inputs = obj.get("inputs").ok_or("inputs: missing")?;
    let inputs = inputs.as_array().ok_or("inputs: expected an array of tensors")?;
    if inputs.is_empty() {
        return Err("inputs: expected at least one tensor".into());
    }
    let inputs = inputs.iter().enumerate().map(|(i, t)| parse_tensor(i, t)).collect::<Result<Vec<_>, _>>()?;
    let parameters = match obj.get("parameters") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
            .collect(),
        Some(_) => return Err("parameters: expected an object".into()),
    };
    Ok(InferRequest { id, inputs, parameters })
}

fn parse_tensor(i: usize, t: &Value) -> Result<(String, Tensor), String> {
    let f = |field: &str| format!("inputs[{i}].{field}");
    let t = t.as_object().ok_or_else(|| format!("inputs[{i}]: expected an object"))?;
    let name =
        t.get("name").and_then(Value::as_str).ok_or_else(|| format!("{}: expected a string", f("name")))?;
    let shape = t
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{}: expected an array of dimensions", f("shape")))?
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| format!("{}: expected non-negative integers", f("shape")))?;
    let datatype = t
        .get("datatype")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{}: expected a string such as \"UINT8\"", f("datatype")))?;
    let dtype = DType::from_kserve_name(datatype).ok_or_else(|| {
        format!("{}: unsupported `{datatype}`; expected FP32, UINT8, INT8, INT32 or INT64", f("datatype"))
    })?;
    let data = t.get("data").ok_or_else(|| format!("{}: missing", f("data")))?;
    let count = element_count(&shape).ok_or_else(|| format!("{}: too many elements", f("shape")))?;
    let mut flat = Vec::with_capacity(count.min(1 << 20));
    flatten(data, &mut flat, 0).map_err(|why| format!("{}: {why}", f("data")))?;
    if flat.len() != count {
        return Err(format!("{}: {} values for shape {shape:?} ({count} elements)", f("data"), flat.len()));
    }
    let mut bytes = Vec::with_capacity(count * dtype.size());
    for (j, v) in flat.iter().enumerate() {
        let bad = || format!("{}[{j}]: {v} is not a valid {datatype}", f("data"));
        match dtype {
            DType::F32 => bytes.extend_from_slice(&(v.as_f64().ok_or_else(bad)? as f32).to_le_bytes()),
            DType::U8 => bytes.push(v.as_u64().and_then(|x| u8::try_from(x).ok()).ok_or_else(bad)?),
            DType::I8 => bytes.extend_from_slice(
                &v.as_i64().and_then(|x| i8::try_from(x).ok()).ok_or_else(bad)?.to_le_bytes(),
            ),
            DType::I32 => bytes.extend_from_slice(
                &v.as_i64().and_then(|x| i32::try_from(x).ok()).ok_or_else(bad)?.to_le_bytes(),
            ),
            DType::I64 => bytes.extend_from_slice(&v.as_i64().ok_or_else(bad)?.to_le_bytes()),
        }
    }
    let tensor = Tensor::new(dtype, shape, bytes).map_err(|e| format!("inputs[{i}]: {e}"))?;
    Ok((name.to_owned(), tensor))
}

/// Flattens a flat or nested array of numbers (row-major), refusing deep nesting.
fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>, depth: usize) -> Result<(), String> {
    match v {
        Value::Array(items) if depth < 32 => items.iter().try_for_each(|x| flatten(x, out, depth + 1)),
        Value::Array(_) => Err("nested too deeply".into()),
        Value::Number(_) => {
            out.push(v);
            Ok(())
        }
        other => Err(format!("expected numbers, found {other}")),
    }
}

fn tensor_values(t: &Tensor) -> Vec<Value> {
    let d = t.data();
    match t.dtype() {
        DType::F32 => {
            d.chunks_exact(4).map(|c| json!(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect()
        }
        DType::U8 => d.iter().map(|b| json!(b)).collect(),
        DType::I8 => d.iter().map(|b| json!(*b as i8)).collect(),
        DType::I32 => {
            d.chunks_exact(4).map(|c| json!(i32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect()
        }
        DType::I64 => d
            .chunks_exact(8)
            .map(|c| json!(i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])))
            .collect(),
    }
}

fn response_json(route: &str, id: Option<String>, reply: &Reply) -> Value {
    let outputs: Vec<Value> = reply
        .outputs
        .iter()
        .map(|(name, t)| {
            json!({ "name": name, "datatype": t.dtype().kserve_name(), "shape": t.shape(), "data": tensor_values(t) })
        })
        .collect();
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
    out
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
        assert_eq!(tensor_values(&t), vec![json!(0.25), json!(0.75)]);
    }
}
