//! Writing configs from code: constructors for the sections that have required fields, and
//! [`NodeConfig::to_toml`], so programs write the same TOML a user would.
//!
//! ```
//! use cascade_runtime::config::{ModelConfig, NodeConfig, PluginConfig, RouteConfig};
//!
//! let mut node = NodeConfig::default();
//! node.models.insert("edge".into(), ModelConfig::new("models/edge_int8.onnx"));
//! let mut plugin = PluginConfig::new("mnist.wasm");
//! plugin.models = vec!["edge".into()];
//! node.plugins.insert("mnist".into(), plugin);
//! node.routes.insert("digits".into(), RouteConfig::new("mnist", 0.9));
//! let text = node.to_toml()?;
//! assert!(text.contains("[routes.digits]"));
//! let validated = cascade_runtime::config::parse(&text, std::path::Path::new("node.toml"))?;
//! assert_eq!(validated.settings.routes["digits"].plugin, "mnist");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use super::schema::{
    BatchingConfig, BreakerConfig, ModelConfig, NodeConfig, PluginConfig, RouteConfig, ThresholdsConfig,
    UpstreamConfig,
};
use super::{ConfigError, ValidatedConfig};

impl NodeConfig {
    /// The config as TOML text, as a user would write it.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError::Serialize { message: e.to_string() })
    }

    /// Writes the config to `path` (relative paths inside it then resolve against the file's
    /// directory), and validates what was written.
    pub fn write(&self, path: &Path) -> Result<ValidatedConfig, ConfigError> {
        let text = self.to_toml()?;
        std::fs::write(path, &text).map_err(|cause| ConfigError::Write { path: path.to_owned(), cause })?;
        super::parse(&text, path)
    }

    /// Accepts escalations over QUIC on `addr`, presenting `cert`/`key` and trusting the
    /// clients `ca` signed.
    pub fn listen_quic(&mut self, addr: &str, cert: &Path, key: &Path, ca: &Path) -> &mut Self {
        let l = &mut self.listeners;
        l.quic = Some(addr.to_owned());
        l.quic_cert = Some(path_text(cert));
        l.quic_key = Some(path_text(key));
        l.quic_ca = Some(path_text(ca));
        self
    }
}

impl ModelConfig {
    /// The model file at `path`, on tract, not pinned.
    pub fn new(path: impl AsRef<Path>) -> ModelConfig {
        ModelConfig {
            path: path_text(path.as_ref()),
            backend: "tract".into(),
            sha256: None,
            fallback_to_tract: true,
            inputs: BTreeMap::new(),
        }
    }
}

impl PluginConfig {
    /// The component at `path`, not pinned, with the default limits and no models.
    pub fn new(path: impl AsRef<Path>) -> PluginConfig {
        PluginConfig {
            path: path_text(path.as_ref()),
            sha256: None,
            memory_limit_mib: super::schema::default_memory_limit_mib(),
            deadline_ms: super::schema::default_plugin_deadline_ms(),
            models: Vec::new(),
            config: Default::default(),
        }
    }
}

impl RouteConfig {
    /// A route served by `plugin`, answering locally at or above `normal` confidence; every
    /// other setting at its default.
    pub fn new(plugin: &str, normal: f64) -> RouteConfig {
        RouteConfig {
            plugin: plugin.to_owned(),
            thresholds: ThresholdsConfig { normal, surge: None, emergency: None },
            deadline_ms: super::schema::default_route_deadline_ms(),
            cache_ttl_s: super::schema::default_cache_ttl_s(),
            max_in_flight: super::schema::default_route_in_flight(),
            queue_len: super::schema::default_queue_len(),
            rate_limit_rps: None,
            rate_burst: None,
            inputs: Vec::new(),
            outputs: Vec::new(),
            from_upstream: None,
            shadow: 0.0,
            auto_threshold: None,
        }
    }
}

impl UpstreamConfig {
    /// A Cascade node over QUIC at `addresses`, whose certificate names it `server_name`;
    /// this node presents `cert`/`key` and trusts what `ca` signed.
    pub fn quic(
        addresses: &[String],
        server_name: &str,
        ca: &Path,
        cert: &Path,
        key: &Path,
    ) -> UpstreamConfig {
        UpstreamConfig {
            addresses: Some(addresses.to_vec()),
            server_name: Some(server_name.to_owned()),
            ca: Some(path_text(ca)),
            cert: Some(path_text(cert)),
            key: Some(path_text(key)),
            ..UpstreamConfig::of_kind("quic")
        }
    }

    /// A KServe v2 server at `url` serving `model`.
    pub fn kserve(url: &str, model: &str) -> UpstreamConfig {
        UpstreamConfig {
            url: Some(url.to_owned()),
            model: Some(model.to_owned()),
            ..UpstreamConfig::of_kind("kserve")
        }
    }

    /// Every field at its default, none of either kind's own fields set.
    fn of_kind(kind: &str) -> UpstreamConfig {
        UpstreamConfig {
            kind: kind.to_owned(),
            addresses: None,
            server_name: None,
            ca: None,
            cert: None,
            key: None,
            url: None,
            model: None,
            connect_timeout_ms: super::schema::default_connect_timeout_ms(),
            request_timeout_ms: super::schema::default_request_timeout_ms(),
            retry_budget: super::schema::default_retry_budget(),
            breaker: BreakerConfig::default(),
        }
    }
}

impl BatchingConfig {
    /// Up to `max_batch` rows per model call, waiting at most `max_delay_us`; with
    /// `calibrate`, only up to a size measured to pay for itself at load.
    pub fn new(max_batch: u32, max_delay_us: u64, calibrate: bool) -> BatchingConfig {
        BatchingConfig { max_batch, max_delay_us, calibrate }
    }
}

/// A path as the config holds it.
fn path_text(p: &Path) -> String {
    p.display().to_string()
}
