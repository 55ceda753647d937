//! A route as the node serves it: its settings, plugin and models resolved once, when the
//! node is built, so a request looks its route up once and carries it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::backend::ModelInfo;
use crate::cache::CacheKey;
use crate::config::{Digest, Mode, ResolvedConfig, RouteSettings};
use crate::fair_share::FairShare;
use crate::models::ModelStore;

/// One route of a node.
#[derive(Debug)]
pub struct Route {
    /// Its name: what clients call (`/v2/models/<name>/infer`).
    pub name: String,
    /// Its settings from the config.
    pub settings: Arc<RouteSettings>,
    plugin_digest: Digest,
    /// Digests of the models the plugin may call, in name order.
    model_digests: Vec<Digest>,
    /// The plugin and model digests, short: what produced an answer.
    model_version: String,
    /// The plugin's models' tensors, for metadata.
    models: Vec<ModelInfo>,
    /// The route's capacity, shared fairly among the downstream nodes escalating to it.
    pub(super) share: Arc<FairShare>,
    /// The `normal` threshold in force, as `f64` bits: the config's, or where the
    /// auto-threshold or an admin moved it.
    normal: AtomicU64,
    /// Whether an admin pinned the `normal` threshold (the auto-threshold then leaves it).
    pinned: AtomicBool,
}

impl Route {
    pub(super) fn new(
        name: &str,
        settings: &RouteSettings,
        config: &ResolvedConfig,
        store: &ModelStore,
    ) -> Route {
        // Validation guarantees the plugin and its models exist; a config built by hand
        // that lacks them gets a route whose key and version say so.
        let plugin = config.plugins.get(&settings.plugin);
        let plugin_digest = plugin.map_or(Digest::of(b""), |p| p.digest);
        let model_names: Vec<&String> = plugin.map(|p| p.spec.models.iter().collect()).unwrap_or_default();
        let model_digests =
            model_names.iter().filter_map(|m| config.models.get(*m).map(|r| r.digest)).collect();
        let mut model_version = format!("{}@{:.12}", settings.plugin, plugin_digest.to_string());
        for m in &model_names {
            if let Some(model) = config.models.get(*m) {
                model_version.push_str(&format!(" {m}@{:.12}", model.digest.to_string()));
            }
        }
        let models =
            model_names.iter().filter_map(|m| store.get(m)).map(|m| m.model.info().clone()).collect();
        Route {
            name: name.to_owned(),
            settings: Arc::new(settings.clone()),
            plugin_digest,
            model_digests,
            model_version,
            models,
            share: FairShare::new(settings.max_in_flight.saturating_add(settings.queue_len)),
            normal: AtomicU64::new(settings.threshold(Mode::Normal).to_bits()),
            pinned: AtomicBool::new(false),
        }
    }

    /// The confidence at or above which this route answers locally in `mode`.
    pub fn threshold(&self, mode: Mode) -> f64 {
        match mode {
            Mode::Normal => f64::from_bits(self.normal.load(Ordering::Relaxed)),
            other => self.settings.threshold(other),
        }
    }

    /// Moves the `normal` threshold (the auto-threshold does, unless pinned).
    pub(super) fn set_threshold(&self, threshold: f64) {
        self.normal.store(threshold.to_bits(), Ordering::Relaxed);
    }

    /// Pins the `normal` threshold at `threshold` (an admin call), or with `None` unpins
    /// it, leaving it where it is.
    pub fn pin_threshold(&self, threshold: Option<f64>) {
        if let Some(t) = threshold {
            self.set_threshold(t);
        }
        self.pinned.store(threshold.is_some(), Ordering::Relaxed);
    }

    /// Whether an admin pinned the `normal` threshold.
    pub fn threshold_pinned(&self) -> bool {
        self.pinned.load(Ordering::Relaxed)
    }

    /// The plugin that handles the route.
    pub fn plugin(&self) -> &str {
        &self.settings.plugin
    }

    /// The cache key of a request whose inputs and parameters serialise to `input`: it
    /// follows the plugin's and the models' versions.
    pub fn cache_key(&self, input: &[u8]) -> CacheKey {
        CacheKey::new(&self.name, &self.plugin_digest, &self.model_digests, input)
    }

    /// The plugin and model digests, short (`mnist@1a2b3c4d5e6f edge@...`).
    pub fn model_version(&self) -> &str {
        &self.model_version
    }

    /// What the node knows of the plugin's models' tensors (for metadata).
    pub fn models(&self) -> &[ModelInfo] {
        &self.models
    }
}
