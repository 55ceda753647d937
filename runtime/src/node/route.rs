//! A route as the node serves it: its settings, plugin and models resolved once, when the
//! node is built, so a request looks its route up once and carries it.

use crate::backend::ModelInfo;
use crate::cache::CacheKey;
use crate::config::{Digest, ResolvedConfig, RouteSettings};
use crate::fair_share::FairShare;
use crate::models::ModelStore;

/// One route of a node.
#[derive(Debug)]
pub struct Route {
    /// Its name: what clients call (`/v2/models/<name>/infer`).
    pub name: String,
    /// Its settings from the config.
    pub settings: RouteSettings,
    plugin_digest: Digest,
    /// Digests of the models the plugin may call, in name order.
    model_digests: Vec<Digest>,
    /// The plugin and model digests, short: what produced an answer.
    model_version: String,
    /// The plugin's models' tensors, for metadata.
    models: Vec<ModelInfo>,
    /// The route's capacity, shared fairly among the downstream nodes escalating to it.
    pub(super) share: std::sync::Arc<FairShare>,
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
            settings: settings.clone(),
            plugin_digest,
            model_digests,
            model_version,
            models,
            share: FairShare::new(settings.max_in_flight.saturating_add(settings.queue_len)),
        }
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
