//! The HTTP front door: KServe v2 / Open Inference Protocol REST over the node that
//! [`CurrentNode`] holds. It only moves bytes: [`InferBody`] extracts a request with the
//! runtime's parser, [`Answer`] turns the node's reply (or its error) into a response, and
//! the router names the endpoints.
//!
//! Errors are `{"error": "..."}` with the status [`ServeError::status`] gives, and
//! `Retry-After` when retrying later can help.

use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cascade_runtime::config::TensorDecl;
use cascade_runtime::kserve::{self, HEADER_LENGTH, InferRequest, OutputChoice};
use cascade_runtime::{CurrentNode, Reply, ServeError, Stage, TensorSpec};
use serde_json::{Value, json};

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
        // The largest request a node takes whole, the same for clients and for tiers.
        .layer(axum::extract::DefaultBodyLimit::max(cascade_runtime::config::MAX_REQUEST_BYTES))
        .with_state(node)
}

/// `{"error": message}` with `status`, and `Retry-After` if given.
fn error(status: u16, message: impl Into<String>, retry_after: Option<u64>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, axum::Json(json!({ "error": message.into() }))).into_response();
    if let Some(secs) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// A request the node could not answer, as the client sees it.
struct Failure(ServeError);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        // The whole error (a trap's backtrace included) is for the operator; the client gets
        // its first line. Per request, so at debug: metrics count failures.
        tracing::debug!(error = %self.0, "request failed");
        error(self.0.status(), self.0.client_message(), self.0.retry_after_secs())
    }
}

/// An inference request body, parsed (JSON tensors or binary tensor data).
pub struct InferBody(pub InferRequest);

impl<S: Send + Sync> FromRequest<S> for InferBody {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<InferBody, Response> {
        let length = request.headers().get(HEADER_LENGTH).map(|v| v.as_bytes().to_vec());
        let body = Bytes::from_request(request, state).await.map_err(IntoResponse::into_response)?;
        kserve::json_length(length.as_deref())
            .and_then(|n| kserve::parse_request(&body, n))
            .map(InferBody)
            .map_err(|message| error(400, message, None))
    }
}

/// The node's answer to one inference request, encoded as that request asked.
struct Answer<'a> {
    route: &'a str,
    id: Option<String>,
    outputs: &'a OutputChoice,
    reply: Reply,
}

impl IntoResponse for Answer<'_> {
    fn into_response(self) -> Response {
        let parameters = self.reply.parameters();
        let encoded =
            match kserve::encode_reply(self.route, self.id, self.outputs, &self.reply.outputs, parameters) {
                Ok(e) => e,
                Err((status, message)) => return error(status, message, None),
            };
        let Some(json_length) = encoded.json_length else {
            return ([(header::CONTENT_TYPE, "application/json")], encoded.body).into_response();
        };
        let mut response = encoded.body.into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        headers.insert(HEADER_LENGTH, HeaderValue::from(json_length));
        response
    }
}

/// The status says it; the body says it too, for clients that read it (KServe's).
async fn live() -> Response {
    axum::Json(json!({ "live": true })).into_response()
}

/// Ready once the node exists: models are prepared and plugins loaded before it is built.
async fn ready() -> Response {
    axum::Json(json!({ "ready": true })).into_response()
}

/// The protocol extensions the node speaks: binary tensor data, in requests and replies
/// ([`InferBody`], [`Answer`]).
const EXTENSIONS: [&str; 1] = ["binary_tensor_data"];

async fn server_metadata(State(current): State<CurrentNode>) -> Response {
    let node = current.get();
    axum::Json(json!({
        "name": node.name(),
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": EXTENSIONS,
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

fn declared_specs(decls: &[TensorDecl]) -> Value {
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
    let Some(r) = node.route(&route) else {
        return Failure(ServeError::UnknownRoute(route)).into_response();
    };
    let first = r.models().first();
    let pick = |declared: &[TensorDecl], model: fn(&cascade_runtime::ModelInfo) -> &[TensorSpec]| match (
        declared.is_empty(),
        first,
    ) {
        (false, _) => declared_specs(declared),
        (true, Some(m)) => tensor_specs(model(m)),
        (true, None) => json!([]),
    };
    let inputs = pick(&r.settings.inputs, |m| &m.inputs);
    let outputs = pick(&r.settings.outputs, |m| &m.outputs);
    let model_names: Vec<&str> = r.models().iter().map(|m| m.name.as_str()).collect();
    axum::Json(json!({
        "name": route,
        "versions": [],
        "platform": "cascade-wasm",
        "inputs": inputs,
        "outputs": outputs,
        "parameters": { "plugin": r.plugin(), "models": model_names },
    }))
    .into_response()
}

async fn model_ready(State(current): State<CurrentNode>, Path(route): Path<String>) -> Response {
    match current.get().route(&route) {
        Some(_) => axum::Json(json!({ "name": route, "ready": true })).into_response(),
        None => Failure(ServeError::UnknownRoute(route)).into_response(),
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

/// The largest body a refusal reads (and drops) so that its connection stays open.
const DRAIN_LIMIT: usize = 64 << 10;

/// `refusal`, for a request whose body has not been read. hyper keeps a connection open after
/// an answer only if the request's body has all been read by then, or is all in its buffer;
/// otherwise it closes the connection after writing an answer that said nothing of it, and a
/// client that has sent its next request on it sees a broken connection (under overload, at
/// random: whenever a body arrives in a later packet than its head). So a body of up to
/// [`DRAIN_LIMIT`] bytes, as its `Content-Length` says, is read and dropped first, unparsed
/// (its read stays under the listener's body timeout); a larger or unsized one, or one that
/// fails to arrive, gets `Connection: close` with the refusal.
async fn refuse_unread(request: Request, mut refusal: Response) -> Response {
    let length =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if length.is_some_and(|n| n <= DRAIN_LIMIT)
        && axum::body::to_bytes(request.into_body(), DRAIN_LIMIT).await.is_ok()
    {
        return refusal;
    }
    refusal.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    refusal
}

/// An unknown route is a 404 whatever the body; a route that would refuse the request for
/// want of room is a 503 before the body is read; then a body that does not parse is a 400.
async fn infer(State(current): State<CurrentNode>, Path(route): Path<String>, request: Request) -> Response {
    let node = current.get();
    if node.route(&route).is_none() {
        return Failure(ServeError::UnknownRoute(route)).into_response();
    }
    if let Err(refused) = node.refuse_early(&route).await {
        return refuse_unread(request, Failure(refused).into_response()).await;
    }
    let InferBody(request) = match InferBody::from_request(request, &()).await {
        Ok(b) => b,
        Err(refusal) => return refusal,
    };
    let result = node.infer(&route, request.inputs, request.parameters).await;
    let t = Instant::now();
    let span = tracing::debug_span!("response", route = %route).entered();
    let response = match result {
        Ok(reply) => {
            Answer { route: &route, id: request.id, outputs: &request.outputs, reply }.into_response()
        }
        Err(e) => Failure(e).into_response(),
    };
    drop(span);
    node.telemetry().stage(Stage::Response, t.elapsed());
    response
}
