//! `[upstream]`: the node hard requests escalate to, another Cascade node over QUIC or a
//! KServe v2 REST server, and `[upstream.breaker]`. In a file of its own because the two
//! kinds share one section with fields each kind requires or refuses.

use serde::{Deserialize, Serialize};

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

pub(in crate::config) fn default_connect_timeout_ms() -> u64 {
    1000
}

pub(in crate::config) fn default_request_timeout_ms() -> u64 {
    500
}

pub(in crate::config) fn default_retry_budget() -> f64 {
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
