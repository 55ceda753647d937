//! The TOML a user writes, field by field. Every section rejects unknown fields, so a typo is
//! an error at load instead of a silently ignored setting. Each field's doc shows its TOML
//! and its default; a field without a default is required.
//!
//! These types are what the file says, not what the node runs: [`super::load`] validates
//! them once and [`super::ValidatedConfig::resolve`] turns them into the hash-pinned
//! [`super::ResolvedConfig`]. They also serialise back to TOML, so a program that writes a
//! config (the demo, the benchmarks, the tests) builds these values and writes them
//! ([`NodeConfig::to_toml`]) instead of formatting TOML by hand.
//!
//! One file per group of sections: `listeners.rs` (`[listeners]`), `models.rs` (`[models]`
//! and `[plugins]`, what runs), `routes.rs` (`[routes]`, what clients call), `upstream.rs`
//! (`[upstream]`) and `modes.rs` (`[modes]`). The short node-wide sections (`[node]`,
//! `[shadow]`, `[admission]`, `[batching]`, `[telemetry]`) stay here with [`NodeConfig`].

mod listeners;
mod models;
mod modes;
mod routes;
mod upstream;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use listeners::ListenersConfig;
pub use models::{ModelConfig, ModelInputConfig, PluginConfig};
pub(super) use models::{default_memory_limit_mib, default_plugin_deadline_ms};
pub use modes::{ModeSwitchesConfig, ModesConfig, SignalThresholdsConfig, SwitchingConfig};
pub use routes::{
    AutoThresholdConfig, FromUpstreamConfig, OutputMapConfig, RouteConfig, TensorDeclConfig, ThresholdsConfig,
};
pub(super) use routes::{
    default_cache_ttl_s, default_queue_len, default_route_deadline_ms, default_route_in_flight,
};
pub use upstream::{BreakerConfig, UpstreamConfig};
pub(super) use upstream::{default_connect_timeout_ms, default_request_timeout_ms, default_retry_budget};

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

/// `[admission]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionConfig {
    /// `max_in_flight = 256`: requests running at once across all routes. Default `256`.
    #[serde(default = "default_global_in_flight")]
    pub max_in_flight: u32,
    /// `max_intake_lag_us = 500`: how far behind a serving thread may fall (how long a
    /// request arriving now would wait for it to be read) for 10 ms on end before the thread
    /// refuses part of the new requests with `503`, before reading their bodies, keeping
    /// itself about 80% busy, so that under several times its capacity the requests it admits
    /// do not wait behind all the others in the socket buffers. It trades answers for
    /// latency: on one core at three times capacity it answered a third as many requests a
    /// second, with an admitted p99 a quarter to a fifth of the ungoverned one
    /// (docs/performance.md, "Overload"). `0` (the default) never refuses for it.
    #[serde(default = "default_max_intake_lag_us")]
    pub max_intake_lag_us: u64,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            max_in_flight: default_global_in_flight(),
            max_intake_lag_us: default_max_intake_lag_us(),
        }
    }
}

fn default_max_intake_lag_us() -> u64 {
    0
}

fn default_global_in_flight() -> u32 {
    256
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

fn default_true() -> bool {
    true
}
