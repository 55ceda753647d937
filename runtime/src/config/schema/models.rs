//! `[models.<name>]` and `[plugins.<name>]`: the files the node runs, each an ONNX model or
//! a guest plugin, with what pins and limits it. Apart from `[routes]`, which say what
//! clients call and which plugin serves it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::default_true;

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

pub(in crate::config) fn default_memory_limit_mib() -> u32 {
    64
}

pub(in crate::config) fn default_plugin_deadline_ms() -> u64 {
    100
}
