//! `[routes.<name>]`: what clients call (`/v2/models/<name>/infer`), with the plugin that
//! serves it, its confidence thresholds per mode, its limits, its declared tensors and its
//! shadow traffic. Apart from `[models]` and `[plugins]`, which say what runs.

use serde::{Deserialize, Serialize};

use crate::config::Mode;

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
    /// tensors its answers carry, whichever tier answers: every answer (local, escalated,
    /// cached or degraded) carries exactly these, in this order, and one that cannot is not
    /// given to the client (a plugin's is a failed request, an upstream's a degraded local
    /// answer). Reported by `GET /v2/models/<route>`. Default: none declared (answers carry
    /// whatever their tier gives; metadata shows the first model's).
    #[serde(default)]
    pub outputs: Vec<TensorDeclConfig>,
    /// `[routes.<name>.from_upstream]`: how the upstream's answers become this route's, when
    /// its outputs are not already the route's (a KServe server returning raw logits).
    /// Default: the upstream's outputs as they come, its confidence and its label.
    pub from_upstream: Option<FromUpstreamConfig>,
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

/// `[routes.<name>.from_upstream]`: how an upstream's raw answer becomes the route's.
///
/// ```toml
/// [routes.digits.from_upstream]
/// outputs = [{ name = "probabilities", from = "logits", transform = "softmax" }]
/// confidence = "probabilities"   # the answer's confidence: the largest value of this output
/// label = "probabilities"        # the answer's label: the index of that largest value
/// ```
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FromUpstreamConfig {
    /// `outputs = [{ name = "probabilities", from = "logits", transform = "softmax" }]`: each
    /// of the route's declared outputs, from which of the upstream's outputs, transformed
    /// how. When set, it maps every declared output. Default: the upstream's outputs by
    /// their own names.
    #[serde(default)]
    pub outputs: Vec<OutputMapConfig>,
    /// `confidence = "probabilities"`: a declared FP32 output holding one row of
    /// probabilities; its largest value is the answer's confidence. Default: the upstream's
    /// own (a Cascade node's plugin's; 1.0 from a KServe server, which sends none).
    pub confidence: Option<String>,
    /// `label = "probabilities"`: a declared output holding one row of scores; the index of
    /// its largest value is the answer's label. Default: the upstream's own (none from a
    /// KServe server).
    pub label: Option<String>,
}

/// One entry of `from_upstream.outputs`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutputMapConfig {
    /// `name = "probabilities"`: the route's declared output. Required.
    pub name: String,
    /// `from = "logits"`: the upstream's output it is made from. Required.
    pub from: String,
    /// `transform = "softmax"`: `"none"` (the values as they come) or `"softmax"` (over the
    /// last dimension, FP32 only). Default `"none"`.
    #[serde(default = "default_transform")]
    pub transform: String,
}

fn default_transform() -> String {
    "none".to_owned()
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

pub(in crate::config) fn default_route_deadline_ms() -> u64 {
    250
}

pub(in crate::config) fn default_cache_ttl_s() -> u64 {
    60
}

pub(in crate::config) fn default_route_in_flight() -> u32 {
    32
}

pub(in crate::config) fn default_queue_len() -> u32 {
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
