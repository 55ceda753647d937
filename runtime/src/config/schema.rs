//! The TOML a user writes, field by field. Every section rejects unknown fields, so a typo is
//! an error at load instead of a silently ignored setting. Each field's doc shows its TOML
//! and its default; a field without a default is required.
//!
//! These types are what the file says, not what the node runs: [`super::load`] validates
//! them once and [`super::ValidatedConfig::resolve`] turns them into the hash-pinned
//! [`super::ResolvedConfig`]. They also serialise back to TOML, so a program that writes a
//! config (the demo, the benchmarks, the tests) builds these values and writes them
//! ([`NodeConfig::to_toml`]) instead of formatting TOML by hand.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Mode;

/// The whole config file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// `[node]`: who this node is.
    #[serde(default)]
    pub node: NodeSection,
    /// `[listeners]`: where clients and downstream nodes reach this node.
    #[serde(default)]
    pub listeners: ListenersConfig,
    /// `[models.<name>]`: the models plugins may call, by name.
    #[serde(default)]
    pub models: BTreeMap<String, ModelConfig>,
    /// `[plugins.<name>]`: the guest plugins, by name.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginConfig>,
    /// `[routes.<name>]`: what clients call (`/v2/models/<name>/infer`), each served by a plugin.
    #[serde(default)]
    pub routes: BTreeMap<String, RouteConfig>,
    /// `[upstream]`: the node hard requests escalate to. Absent on the central tier.
    pub upstream: Option<UpstreamConfig>,
    /// `[admission]`: node-wide limits.
    #[serde(default)]
    pub admission: AdmissionConfig,
    /// `[modes]`: the switches of each mode and when the node changes mode by itself.
    #[serde(default)]
    pub modes: ModesConfig,
    /// `[batching]`: dynamic batching of model calls, for the central tier. Absent: no batching.
    pub batching: Option<BatchingConfig>,
    /// `[telemetry]`: logs and metrics.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// `[shadow]`: where shadow records are kept. Required when a route sets `shadow` or
    /// `auto_threshold`.
    pub shadow: Option<ShadowConfig>,
}

/// `[shadow]`: the durable store of shadow records (one SQLite file), each (route, this
/// node's confidence and label, the upstream's label, when). A restart loses none; the
/// oldest are deleted beyond `max_records`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowConfig {
    /// `store = "shadow.sqlite"`: the file, relative to the config file. Required.
    pub store: String,
    /// `max_records = 100000`: records kept, per route. Default `100000`.
    #[serde(default = "default_shadow_records")]
    pub max_records: u32,
}

fn default_shadow_records() -> u32 {
    100_000
}

/// `[node]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// `name = "edge"`: reported as the `tier` that answered a request. Default `"cascade"`.
    #[serde(default = "default_node_name")]
    pub name: String,
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection { name: default_node_name() }
    }
}

fn default_node_name() -> String {
    "cascade".to_owned()
}

/// `[listeners]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenersConfig {
    /// `http = "127.0.0.1:8080"`: KServe v2 HTTP for clients. Default `"127.0.0.1:8080"`.
    #[serde(default = "default_http")]
    pub http: String,
    /// `quic = "0.0.0.0:4433"`: QUIC for downstream nodes escalating here. Default: none
    /// (this node accepts no escalations).
    pub quic: Option<String>,
    /// `quic_cert = "certs/central.pem"`: the certificate the QUIC listener presents (from
    /// `edge-node certs issue`). Required with `quic`.
    pub quic_cert: Option<String>,
    /// `quic_key = "certs/central.key"`: its private key. Required with `quic`.
    pub quic_key: Option<String>,
    /// `quic_ca = "certs/ca.pem"`: the CA that must have signed every downstream node's
    /// client certificate (mutual TLS). Required with `quic`.
    pub quic_ca: Option<String>,
    /// `quic_allow = ["edge-1", "pop-*"]`: the names (certificate common names; `prefix*`
    /// matches a prefix) of the downstream nodes that may escalate here. Default: every node
    /// with a certificate from `quic_ca` that allows escalating (`certs issue --role edge` or
    /// `relay`).
    pub quic_allow: Option<Vec<String>>,
    /// `quic_max_connections_per_peer = 4`: connections one downstream node (one certificate
    /// name) may hold open. Default 4.
    #[serde(default = "default_quic_connections_per_peer")]
    pub quic_max_connections_per_peer: u32,
    /// `quic_max_streams_per_connection = 128`: escalations one connection may have open at
    /// once; more wait in the downstream node. Default 128.
    #[serde(default = "default_quic_streams")]
    pub quic_max_streams_per_connection: u32,
    /// `http_header_timeout_ms = 5000`: time for a request's head to arrive (from the
    /// connection's accept, or from a later request's first byte). Default 5000.
    #[serde(default = "default_header_timeout_ms")]
    pub http_header_timeout_ms: u64,
    /// `http_body_timeout_ms = 30000`: time for a request's whole body to arrive, from the end
    /// of its head; a slower one gets 408. Default 30000.
    #[serde(default = "default_body_timeout_ms")]
    pub http_body_timeout_ms: u64,
    /// `http_idle_timeout_ms = 60000`: time a kept-alive connection may wait for its next
    /// request. Default 60000.
    #[serde(default = "default_idle_timeout_ms")]
    pub http_idle_timeout_ms: u64,
    /// `http_max_connections = 1024`: connections open at once on the HTTP (and admin)
    /// listener; the ones past it get 503. Default 1024.
    #[serde(default = "default_max_connections")]
    pub http_max_connections: u32,
    /// `drain_timeout_ms = 10000`: on shutdown, time requests and escalations in flight get to
    /// finish before their connections are closed. Default 10000.
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
    /// `quic_max_buffered_mib = 128`: request bytes all downstream nodes together may have
    /// this node hold (arriving and waiting for an answer); past it, their streams wait.
    /// Default 128.
    #[serde(default = "default_quic_buffered_mib")]
    pub quic_max_buffered_mib: u32,
    /// `admin = "127.0.0.1:9090"`: the admin API (pin or unpin the mode, reload the config),
    /// on a listener of its own so that it can stay off the network clients reach. Default:
    /// none (no admin API; SIGHUP still reloads).
    pub admin: Option<String>,
    /// `admin_token_file = "admin.token"`: a file holding the bearer token every admin call
    /// must present (`Authorization: Bearer <token>`), at least 16 characters. Required with
    /// `admin`.
    pub admin_token_file: Option<String>,
}

impl Default for ListenersConfig {
    fn default() -> Self {
        ListenersConfig {
            http: default_http(),
            quic: None,
            quic_cert: None,
            quic_key: None,
            quic_ca: None,
            quic_allow: None,
            quic_max_connections_per_peer: default_quic_connections_per_peer(),
            quic_max_streams_per_connection: default_quic_streams(),
            quic_max_buffered_mib: default_quic_buffered_mib(),
            http_header_timeout_ms: default_header_timeout_ms(),
            http_body_timeout_ms: default_body_timeout_ms(),
            http_idle_timeout_ms: default_idle_timeout_ms(),
            http_max_connections: default_max_connections(),
            drain_timeout_ms: default_drain_timeout_ms(),
            admin: None,
            admin_token_file: None,
        }
    }
}

fn default_http() -> String {
    "127.0.0.1:8080".to_owned()
}

fn default_header_timeout_ms() -> u64 {
    5_000
}

fn default_body_timeout_ms() -> u64 {
    30_000
}

fn default_idle_timeout_ms() -> u64 {
    60_000
}

fn default_max_connections() -> u32 {
    1024
}

fn default_drain_timeout_ms() -> u64 {
    10_000
}

fn default_quic_connections_per_peer() -> u32 {
    4
}

fn default_quic_streams() -> u32 {
    128
}

fn default_quic_buffered_mib() -> u32 {
    128
}

/// `[models.<name>]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// `path = "models/edge_int8.onnx"`: the ONNX file, relative to the config file. Required.
    pub path: String,
    /// `backend = "tract"`: `"tract"` (CPU) or `"wgpu"` (GPU compute). Default `"tract"`.
    #[serde(default = "default_backend")]
    pub backend: String,
    /// `sha256 = "<64 hex digits>"`: pins the file; a different file is refused at load.
    /// Default: not pinned (the digest is computed at load and printed by `edge-node check`).
    pub sha256: Option<String>,
    /// `fallback_to_tract = true`: if the `wgpu` backend cannot run the model (no GPU,
    /// unsupported operator), run it on tract instead of failing. Default `true`.
    #[serde(default = "default_true")]
    pub fallback_to_tract: bool,
    /// `[models.<name>.inputs.<input>]`: fixes an input's shape where the file leaves
    /// dimensions free (a model that has free dimensions is refused until they are fixed).
    /// Default: none, the shapes the file declares.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, ModelInputConfig>,
}

/// `[models.<name>.inputs.<input>]`, for an input named `<input>` in the ONNX graph:
///
/// ```toml
/// [models.ocr.inputs.x]
/// batch = "N"
/// shape = [3, 32, 100]
/// ```
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelInputConfig {
    /// `shape = [3, 32, 100]`: the dimensions after the batch, each at least 1; where the
    /// file fixes a dimension the two must agree. Default: the file's dimensions.
    pub shape: Option<Vec<i64>>,
    /// `batch = "N"`: the file's name for the input's first dimension, which is the batch;
    /// a file that names it otherwise is refused. Default: not checked.
    pub batch: Option<String>,
}

fn default_backend() -> String {
    "tract".to_owned()
}

fn default_true() -> bool {
    true
}

/// `[plugins.<name>]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// `path = "plugins/classifier.wasm"`: the component built by `edge-node plugin build`,
    /// relative to the config file. Required.
    pub path: String,
    /// `sha256 = "<64 hex digits>"`: pins the file. Default: not pinned (computed at load).
    pub sha256: Option<String>,
    /// `memory_limit_mib = 64`: the most linear memory one instance may grow to. Default `64`.
    #[serde(default = "default_memory_limit_mib")]
    pub memory_limit_mib: u32,
    /// `deadline_ms = 100`: wall time one `handle` call may take before it is interrupted.
    /// Default `100`.
    #[serde(default = "default_plugin_deadline_ms")]
    pub deadline_ms: u64,
    /// `models = ["edge"]`: the models this plugin may call; any other is refused on the host.
    /// Default `[]` (none).
    #[serde(default)]
    pub models: Vec<String>,
    /// `[plugins.<name>.config]` `labels = "0123456789"`: static key/values handed to the
    /// plugin. Default: empty.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

pub(super) fn default_memory_limit_mib() -> u32 {
    64
}

pub(super) fn default_plugin_deadline_ms() -> u64 {
    100
}

/// `[routes.<name>]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// `plugin = "mnist"`: the plugin that handles this route's requests. Required.
    pub plugin: String,
    /// `[routes.<name>.thresholds]`: the confidence at or above which a request is answered
    /// locally, per mode. Required (at least `normal`).
    pub thresholds: ThresholdsConfig,
    /// `deadline_ms = 250`: the whole request's budget, local work and escalation included.
    /// Default `250`.
    #[serde(default = "default_route_deadline_ms")]
    pub deadline_ms: u64,
    /// `cache_ttl_s = 60`: how long an answer is served from the cache; `0` disables caching
    /// for the route. Default `60`.
    #[serde(default = "default_cache_ttl_s")]
    pub cache_ttl_s: u64,
    /// `max_in_flight = 32`: requests of this route running at once (the bulkhead).
    /// Default `32`.
    #[serde(default = "default_route_in_flight")]
    pub max_in_flight: u32,
    /// `queue_len = 64`: requests waiting for a slot; beyond it, `503`. Default `64`.
    #[serde(default = "default_queue_len")]
    pub queue_len: u32,
    /// `rate_limit_rps = 1000.0`: sustained requests per second; beyond it, `429`.
    /// Default: no rate limit.
    pub rate_limit_rps: Option<f64>,
    /// `rate_burst = 100`: requests allowed at once above the sustained rate. Default: one
    /// second's worth of `rate_limit_rps` (at least 1).
    pub rate_burst: Option<u32>,
    /// `inputs = [{ name = "image", datatype = "UINT8", shape = [28, 28] }]`: the tensors the
    /// route's plugin takes, as KServe v2 names them (`-1` for a dimension of any size).
    /// Reported by `GET /v2/models/<route>`, and requests that do not match are refused with
    /// `400` before the plugin runs. Default: none declared (metadata then shows the
    /// tensors of the plugin's first model, and the plugin checks its own inputs).
    #[serde(default)]
    pub inputs: Vec<TensorDeclConfig>,
    /// `outputs = [{ name = "probabilities", datatype = "FP32", shape = [1, 10] }]`: the
    /// tensors its answers carry, for metadata. Default: none declared (the first model's).
    #[serde(default)]
    pub outputs: Vec<TensorDeclConfig>,
    /// `shadow = 0.05`: the fraction of locally answered requests also sent upstream, after
    /// the answer, to check it: the agreement between this node's answers and the upstream's
    /// is recorded in `[shadow] store` and exported as metrics, and feeds
    /// `auto_threshold`. Shadow requests never delay an answer, spend the escalation budget
    /// and are dropped first under load. In `[0, 1]`; needs an `[upstream]` and a
    /// `[shadow]` section. Default `0` (none).
    #[serde(default)]
    pub shadow: f64,
    /// `[routes.<name>.auto_threshold]`: move the route's `normal` threshold by itself,
    /// toward a target agreement with the upstream measured on shadow traffic. Default: off.
    pub auto_threshold: Option<AutoThresholdConfig>,
}

/// `[routes.<name>.auto_threshold]`: the node moves the route's `normal` threshold toward the
/// lowest threshold (the most answers kept at the edge) whose estimated agreement with the
/// upstream reaches `target_agreement`, estimated from the latest `window` shadow records:
/// answers at or above the threshold agree as often as their records say, those below it
/// would escalate and so agree. It moves at most `step` per `interval_s`, only when the
/// target threshold is more than `step / 2` away (hysteresis), never outside `[min, max]`.
/// A reload or the admin API pins the threshold (`PUT /admin/threshold`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AutoThresholdConfig {
    /// `target_agreement = 0.995`: the agreement with the upstream to hold, in `[0, 1]`.
    /// Required.
    pub target_agreement: f64,
    /// `min = 0.5`: the lowest threshold it may set, in `[0, 1]`. Default `0.5`.
    #[serde(default = "default_auto_min")]
    pub min: f64,
    /// `max = 0.99`: the highest threshold it may set, in `[min, 1]`. Default `0.99`.
    #[serde(default = "default_auto_max")]
    pub max: f64,
    /// `min_samples = 200`: shadow records needed before it moves at all. Default `200`.
    #[serde(default = "default_auto_min_samples")]
    pub min_samples: u32,
    /// `window = 2000`: the latest shadow records it estimates from. Default `2000`.
    #[serde(default = "default_auto_window")]
    pub window: u32,
    /// `step = 0.01`: the most it moves at once. Default `0.01`.
    #[serde(default = "default_auto_step")]
    pub step: f64,
    /// `interval_s = 10`: how often it looks. Default `10`.
    #[serde(default = "default_auto_interval_s")]
    pub interval_s: u64,
}

fn default_auto_min() -> f64 {
    0.5
}

fn default_auto_max() -> f64 {
    0.99
}

fn default_auto_min_samples() -> u32 {
    200
}

fn default_auto_window() -> u32 {
    2000
}

fn default_auto_step() -> f64 {
    0.01
}

fn default_auto_interval_s() -> u64 {
    10
}

/// One tensor of a route's declared inputs or outputs.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TensorDeclConfig {
    /// `name = "image"`. Required.
    pub name: String,
    /// `datatype = "UINT8"`: `FP32`, `UINT8`, `INT8`, `INT32` or `INT64`. Required.
    pub datatype: String,
    /// `shape = [28, 28]`: dimensions, `-1` for any size. Required.
    pub shape: Vec<i64>,
}

pub(super) fn default_route_deadline_ms() -> u64 {
    250
}

pub(super) fn default_cache_ttl_s() -> u64 {
    60
}

pub(super) fn default_route_in_flight() -> u32 {
    32
}

pub(super) fn default_queue_len() -> u32 {
    64
}

/// `[routes.<name>.thresholds]`. The threshold used in a mode is, most specific first: this
/// route's value for the mode, `[modes.<mode>].threshold`, this route's `normal`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdsConfig {
    /// `normal = 0.9`: in `[0, 1]`. Required.
    pub normal: f64,
    /// `surge = 0.8`: in `[0, 1]`. Default: see the type's doc.
    pub surge: Option<f64>,
    /// `emergency = 0.0`: in `[0, 1]`. Default: see the type's doc.
    pub emergency: Option<f64>,
}

/// `[upstream]`: either another Cascade node over QUIC (`kind = "quic"`, the default) or a
/// KServe v2 / Open Inference Protocol REST server such as Triton, KServe or Seldon MLServer
/// (`kind = "kserve"`).
///
/// ```toml
/// [upstream]                       # a Cascade node over QUIC with mutual TLS
/// addresses = ["10.0.0.5:4433"]
/// server_name = "central"
/// ca = "certs/ca.pem"
/// cert = "certs/edge.pem"
/// key = "certs/edge.key"
/// ```
///
/// ```toml
/// [upstream]                       # a KServe v2 REST server
/// kind = "kserve"
/// url = "http://10.0.0.7:8080"
/// model = "central"
/// ```
///
/// The timeouts, `retry_budget` and `[upstream.breaker]` mean the same for both kinds. The
/// QUIC fields (`addresses`, `server_name`, `ca`, `cert`, `key`) are required with `quic` and
/// refused with `kserve`; `url` and `model` are required with `kserve` and refused with `quic`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `kind = "quic"`: `"quic"` (a Cascade node) or `"kserve"` (a KServe v2 REST server).
    /// Default `"quic"`.
    #[serde(default = "default_upstream_kind")]
    pub kind: String,
    /// `addresses = ["10.0.0.5:4433"]`: the upstream node's QUIC listeners (`ip:port`), tried
    /// in order. Required with `quic`, at least one.
    pub addresses: Option<Vec<String>>,
    /// `server_name = "central"`: the name the upstream's certificate must carry. Required
    /// with `quic`.
    pub server_name: Option<String>,
    /// `ca = "certs/ca.pem"`: the CA that signed the upstream's certificate. Required with
    /// `quic`.
    pub ca: Option<String>,
    /// `cert = "certs/edge.pem"`: this node's client certificate (mutual TLS). Required with
    /// `quic`.
    pub cert: Option<String>,
    /// `key = "certs/edge.key"`: this node's private key. Required with `quic`.
    pub key: Option<String>,
    /// `url = "http://10.0.0.7:8080"`: the KServe server's base URL; the node POSTs to
    /// `{url}/v2/models/{model}/infer`. Plain `http` only (this build has no TLS for HTTP
    /// clients: put a TLS-terminating proxy on the node's side if the link needs it).
    /// Required with `kserve`.
    pub url: Option<String>,
    /// `model = "central"`: the model's name on the KServe server. Required with `kserve`.
    pub model: Option<String>,
    /// `connect_timeout_ms = 1000`: giving up on a connection attempt. Default `1000`.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// `request_timeout_ms = 500`: giving up on one escalation (also capped by the request's
    /// own deadline). Default `500`.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// `retry_budget = 0.1`: retries allowed, as a fraction of escalations, in `[0, 1]`.
    /// Default `0.1`.
    #[serde(default = "default_retry_budget")]
    pub retry_budget: f64,
    /// `[upstream.breaker]`: when to stop calling a failing upstream.
    #[serde(default)]
    pub breaker: BreakerConfig,
}

fn default_upstream_kind() -> String {
    "quic".to_owned()
}

pub(super) fn default_connect_timeout_ms() -> u64 {
    1000
}

pub(super) fn default_request_timeout_ms() -> u64 {
    500
}

pub(super) fn default_retry_budget() -> f64 {
    0.1
}

/// `[upstream.breaker]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// `failure_threshold = 5`: consecutive failures that open the breaker. Default `5`.
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
    /// `open_ms = 5000`: how long the breaker stays open before probing. Default `5000`.
    #[serde(default = "default_open_ms")]
    pub open_ms: u64,
    /// `half_open_probes = 1`: successful probes that close it again. Default `1`.
    #[serde(default = "default_half_open_probes")]
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: default_failure_threshold(),
            open_ms: default_open_ms(),
            half_open_probes: default_half_open_probes(),
        }
    }
}

fn default_failure_threshold() -> u32 {
    5
}

fn default_open_ms() -> u64 {
    5000
}

fn default_half_open_probes() -> u32 {
    1
}

/// `[admission]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionConfig {
    /// `max_in_flight = 256`: requests running at once across all routes. Default `256`.
    #[serde(default = "default_global_in_flight")]
    pub max_in_flight: u32,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig { max_in_flight: default_global_in_flight() }
    }
}

fn default_global_in_flight() -> u32 {
    256
}

/// `[modes]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModesConfig {
    /// `[modes.normal]`. Defaults: escalation budget 100/s (burst 200).
    #[serde(default)]
    pub normal: ModeSwitchesConfig,
    /// `[modes.surge]`. Defaults: escalation budget 20/s (burst 40).
    #[serde(default)]
    pub surge: ModeSwitchesConfig,
    /// `[modes.emergency]`. Defaults: escalation budget 0 (no escalation).
    #[serde(default)]
    pub emergency: ModeSwitchesConfig,
    /// `[modes.switching]`: automatic mode changes.
    #[serde(default)]
    pub switching: SwitchingConfig,
}

/// `[modes.<mode>]`: what changes in a mode. Unset fields take the mode's default.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModeSwitchesConfig {
    /// `threshold = 0.0`: the confidence threshold for every route that does not set its own
    /// for this mode, in `[0, 1]`. Default: each route's `normal`.
    pub threshold: Option<f64>,
    /// `escalation_budget_rps = 100.0`: escalations per second allowed (a token bucket that
    /// protects the upstream); `0` escalates nothing. Default: see [`ModesConfig`].
    pub escalation_budget_rps: Option<f64>,
    /// `escalation_burst = 200`: escalations allowed at once. Default: twice the rate, at
    /// least 1 unless the rate is 0.
    pub escalation_burst: Option<u32>,
    /// `disabled_routes = ["bulk"]`: routes refused with `503` in this mode. Default `[]`.
    #[serde(default)]
    pub disabled_routes: Vec<String>,
    /// `batching_delay_us = 500`: the batcher's wait for more requests in this mode.
    /// Default: `[batching].max_delay_us`.
    pub batching_delay_us: Option<u64>,
}

/// `[modes.switching]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchingConfig {
    /// `automatic = true`: change mode on the node's own signals. Default `true`.
    #[serde(default = "default_true")]
    pub automatic: bool,
    /// `min_dwell_ms = 10000`: the least time spent in a mode before stepping down again
    /// (stepping up is immediate). Default `10000`.
    #[serde(default = "default_min_dwell_ms")]
    pub min_dwell_ms: u64,
    /// `[modes.switching.surge]`: when to enter and leave `surge`. Defaults: queue 0.5/0.25,
    /// upstream latency 200/100 ms, upstream error rate 0.2/0.05.
    #[serde(default = "default_surge_signals")]
    pub surge: SignalThresholdsConfig,
    /// `[modes.switching.emergency]`: when to enter and leave `emergency`. Defaults: queue
    /// 0.9/0.5, upstream latency 1000/400 ms, upstream error rate 0.5/0.2.
    #[serde(default = "default_emergency_signals")]
    pub emergency: SignalThresholdsConfig,
}

impl Default for SwitchingConfig {
    fn default() -> Self {
        SwitchingConfig {
            automatic: true,
            min_dwell_ms: default_min_dwell_ms(),
            surge: default_surge_signals(),
            emergency: default_emergency_signals(),
        }
    }
}

fn default_min_dwell_ms() -> u64 {
    10_000
}

fn default_surge_signals() -> SignalThresholdsConfig {
    SignalThresholdsConfig {
        queue_enter: 0.5,
        queue_exit: 0.25,
        latency_enter_ms: 200.0,
        latency_exit_ms: 100.0,
        error_rate_enter: 0.2,
        error_rate_exit: 0.05,
    }
}

fn default_emergency_signals() -> SignalThresholdsConfig {
    SignalThresholdsConfig {
        queue_enter: 0.9,
        queue_exit: 0.5,
        latency_enter_ms: 1000.0,
        latency_exit_ms: 400.0,
        error_rate_enter: 0.5,
        error_rate_exit: 0.2,
    }
}

/// `[modes.switching.<mode>]`: a mode is entered when any signal reaches its `*_enter` value
/// and left when every signal is at or below its `*_exit` value (hysteresis: exit < enter).
/// All fields are required when the table is written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SignalThresholdsConfig {
    /// `queue_enter = 0.5`: fullest route queue, as a fraction of its `queue_len`, in `[0, 1]`.
    pub queue_enter: f64,
    /// `queue_exit = 0.25`
    pub queue_exit: f64,
    /// `latency_enter_ms = 200.0`: upstream latency (moving average), in milliseconds.
    pub latency_enter_ms: f64,
    /// `latency_exit_ms = 100.0`
    pub latency_exit_ms: f64,
    /// `error_rate_enter = 0.2`: failed escalations (moving average), in `[0, 1]`.
    pub error_rate_enter: f64,
    /// `error_rate_exit = 0.05`
    pub error_rate_exit: f64,
}

/// `[batching]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BatchingConfig {
    /// `max_batch = 32`: most requests in one model call. Default `32`.
    #[serde(default = "default_max_batch")]
    pub max_batch: u32,
    /// `max_delay_us = 2000`: longest a request waits for others to fill a batch.
    /// Default `2000`.
    #[serde(default = "default_max_delay_us")]
    pub max_delay_us: u64,
    /// `calibrate = true`: at load, time each model at batch 1, 2, 4, ... `max_batch` and
    /// batch it only up to a size that is cheaper per request by more than handing the call
    /// to a batching thread costs; a model no size saves that much on (common on CPUs) is
    /// not batched at all. `false` batches every model up to `max_batch`. Default `true`.
    #[serde(default = "default_true")]
    pub calibrate: bool,
}

fn default_max_batch() -> u32 {
    32
}

fn default_max_delay_us() -> u64 {
    2000
}

/// `[telemetry]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `metrics = true`: serve Prometheus metrics at `/metrics`. Default `true`.
    #[serde(default = "default_true")]
    pub metrics: bool,
    /// `log = "info"`: a `tracing` filter (`RUST_LOG` syntax); `RUST_LOG` overrides it.
    /// Default `"info"`.
    #[serde(default = "default_log")]
    pub log: String,
    /// `[telemetry.receipts]`: a JSON-lines log of sampled decision receipts, for audit.
    /// Default: none.
    pub receipts: Option<ReceiptsConfig>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig { metrics: true, log: default_log(), receipts: None }
    }
}

/// `[telemetry.receipts]`: every answer's receipt (its KServe `parameters`: tier,
/// confidences, threshold, mode, models...) as one JSON line, sampled, written off the
/// request path, rotated by size. Receipts that would block a request are dropped and
/// counted (`cascade_receipts_dropped_total`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptsConfig {
    /// `path = "receipts.jsonl"`: the file, relative to the config file; rotated files get
    /// `.1`, `.2`, ... Required.
    pub path: String,
    /// `sample = 0.01`: the fraction of answers logged, in `[0, 1]`. Default `1`.
    #[serde(default = "default_sample")]
    pub sample: f64,
    /// `max_mib = 64`: the size at which the file is rotated. Default `64`.
    #[serde(default = "default_receipts_mib")]
    pub max_mib: u32,
    /// `keep = 3`: rotated files kept. Default `3`.
    #[serde(default = "default_receipts_keep")]
    pub keep: u32,
}

fn default_sample() -> f64 {
    1.0
}

fn default_receipts_mib() -> u32 {
    64
}

fn default_receipts_keep() -> u32 {
    3
}

fn default_log() -> String {
    "info".to_owned()
}

impl ThresholdsConfig {
    /// The value written for `mode`, if any.
    pub fn get(&self, mode: Mode) -> Option<f64> {
        match mode {
            Mode::Normal => Some(self.normal),
            Mode::Surge => self.surge,
            Mode::Emergency => self.emergency,
        }
    }
}

impl ModesConfig {
    /// The switches written for `mode`.
    pub fn get(&self, mode: Mode) -> &ModeSwitchesConfig {
        match mode {
            Mode::Normal => &self.normal,
            Mode::Surge => &self.surge,
            Mode::Emergency => &self.emergency,
        }
    }
}

impl SwitchingConfig {
    /// The signal thresholds of an elevated mode; `None` for `normal`, which has none.
    pub fn signals(&self, mode: Mode) -> Option<&SignalThresholdsConfig> {
        match mode {
            Mode::Normal => None,
            Mode::Surge => Some(&self.surge),
            Mode::Emergency => Some(&self.emergency),
        }
    }
}
