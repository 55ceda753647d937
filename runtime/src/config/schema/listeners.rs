//! `[listeners]`: where clients, downstream nodes and the admin API reach this node, and the
//! limits and timeouts of each listener. In a file of its own because it is the largest
//! section, one field per knob of the HTTP, QUIC and admin listeners.

use serde::{Deserialize, Serialize};

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
