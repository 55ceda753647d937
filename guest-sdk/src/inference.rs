//! The inference capability: run a model from the node's registry.
//!
//! Only models on the plugin's allowlist in the node config can be run; calling another
//! one ends the request with a capability error. Works only inside a plugin.

use crate::bindings::cascade::plugin::inference as wit;
use crate::plugin::{PluginError, named_to_wit};
use crate::tensor::{Tensor, TensorError};

/// Why an inference call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InferenceError {
    /// The node has no model by that name for this plugin.
    UnknownModel(String),
    /// The tensors do not match the model's inputs; the host says which and how.
    InvalidTensor(String),
    /// The backend failed.
    Failed(String),
}

impl core::fmt::Display for InferenceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            InferenceError::UnknownModel(m) => write!(f, "unknown model: {m}"),
            InferenceError::InvalidTensor(m) => write!(f, "invalid tensor: {m}"),
            InferenceError::Failed(m) => write!(f, "inference failed: {m}"),
        }
    }
}

impl std::error::Error for InferenceError {}

impl From<InferenceError> for PluginError {
    fn from(e: InferenceError) -> PluginError {
        PluginError::Inference(e.to_string())
    }
}

impl From<TensorError> for InferenceError {
    fn from(e: TensorError) -> InferenceError {
        InferenceError::Failed(format!("the host returned a malformed tensor: {e}"))
    }
}

/// Runs `model` on named `inputs` (one per model input; the first dimension is the batch)
/// and returns every output, named as in the model graph, in graph order.
pub fn compute(model: &str, inputs: Vec<(String, Tensor)>) -> Result<Vec<(String, Tensor)>, InferenceError> {
    let outputs = wit::compute(model, &named_to_wit(inputs)).map_err(|e| match e {
        wit::Error::UnknownModel(m) => InferenceError::UnknownModel(m),
        wit::Error::InvalidTensor(m) => InferenceError::InvalidTensor(m),
        wit::Error::Failed(m) => InferenceError::Failed(m),
    })?;
    outputs.into_iter().map(|nt| Ok((nt.name, crate::tensor::from_wit(nt.tensor)?))).collect()
}
