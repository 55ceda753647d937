//! The request a plugin receives, the outcome it returns, and the trait it implements.

use crate::bindings::cascade::plugin::types as wit;
use crate::tensor::{Tensor, TensorError};

/// One inference request, as the node received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The route the request came in on.
    pub route: String,
    /// Named input tensors, in the order the client sent them.
    pub inputs: Vec<(String, Tensor)>,
    /// Free-form (key, value) parameters.
    pub parameters: Vec<(String, String)>,
}

impl Request {
    /// The input called `name`.
    pub fn input(&self, name: &str) -> Result<&Tensor, PluginError> {
        self.inputs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .ok_or_else(|| PluginError::BadRequest(format!("missing input {name}")))
    }

    /// The first input, for plugins that take exactly one tensor.
    pub fn first_input(&self) -> Result<&Tensor, PluginError> {
        self.inputs
            .first()
            .map(|(_, t)| t)
            .ok_or_else(|| PluginError::BadRequest("the request has no inputs".into()))
    }

    /// The value of parameter `key`, if given.
    pub fn parameter(&self, key: &str) -> Option<&str> {
        self.parameters.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// A local answer: outputs, a confidence in [0, 1], an optional label.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// Output tensors to return to the client.
    pub outputs: Vec<(String, Tensor)>,
    /// How sure the plugin is, in [0, 1]; the node refuses NaN or out-of-range values.
    pub confidence: f32,
    /// Optional human-readable label.
    pub label: Option<String>,
}

impl Answer {
    /// An answer with this confidence and no outputs yet.
    pub fn new(confidence: f32) -> Answer {
        Answer { outputs: Vec::new(), confidence, label: None }
    }

    /// Adds an output tensor.
    pub fn with_output(mut self, name: impl Into<String>, tensor: Tensor) -> Answer {
        self.outputs.push((name.into(), tensor));
        self
    }

    /// Sets the label.
    pub fn with_label(mut self, label: impl Into<String>) -> Answer {
        self.label = Some(label.into());
        self
    }
}

/// What a plugin decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Answer locally.
    Answer(Answer),
    /// Ask the node to escalate the request upstream, saying why.
    Escalate(String),
}

/// Why a plugin could not handle a request; the node returns it to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginError {
    /// The request is malformed for this plugin.
    BadRequest(String),
    /// A call to the inference capability failed.
    Inference(String),
    /// Anything else.
    Internal(String),
}

impl core::fmt::Display for PluginError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PluginError::BadRequest(m) => write!(f, "bad request: {m}"),
            PluginError::Inference(m) => write!(f, "inference: {m}"),
            PluginError::Internal(m) => write!(f, "internal: {m}"),
        }
    }
}

impl std::error::Error for PluginError {}

impl From<TensorError> for PluginError {
    fn from(e: TensorError) -> PluginError {
        PluginError::BadRequest(e.to_string())
    }
}

/// A request handler. Implement it on a type and export the type with
/// [`export_plugin!`](crate::export_plugin).
pub trait Plugin {
    /// Handles one request. Called once per fresh instance.
    fn handle(request: Request) -> Result<Outcome, PluginError>;
}

fn to_wit_named(list: Vec<(String, Tensor)>) -> Vec<wit::NamedTensor> {
    list.into_iter().map(|(name, t)| wit::NamedTensor { name, tensor: crate::tensor::into_wit(t) }).collect()
}

/// Converts the generated request, calls the plugin, converts its outcome back.
#[doc(hidden)]
pub fn dispatch<P: Plugin>(request: wit::Request) -> Result<wit::Outcome, wit::PluginError> {
    install_panic_logger();
    let mut inputs = Vec::with_capacity(request.inputs.len());
    for nt in request.inputs {
        let t = crate::tensor::from_wit(nt.tensor)
            .map_err(|e| wit::PluginError::BadRequest(format!("input {}: {e}", nt.name)))?;
        inputs.push((nt.name, t));
    }
    let request = Request { route: request.route, inputs, parameters: request.parameters };
    match P::handle(request) {
        Ok(Outcome::Answer(a)) => Ok(wit::Outcome::Answer(wit::Answer {
            outputs: to_wit_named(a.outputs),
            confidence: a.confidence,
            label: a.label,
        })),
        Ok(Outcome::Escalate(why)) => Ok(wit::Outcome::Escalate(why)),
        Err(PluginError::BadRequest(m)) => Err(wit::PluginError::BadRequest(m)),
        Err(PluginError::Inference(m)) => Err(wit::PluginError::Inference(m)),
        Err(PluginError::Internal(m)) => Err(wit::PluginError::Internal(m)),
    }
}

pub(crate) fn named_to_wit(list: Vec<(String, Tensor)>) -> Vec<wit::NamedTensor> {
    to_wit_named(list)
}

/// With `panic = "abort"` a panic message is lost when the instance traps: log it first so
/// the node's error for the request can say why.
fn install_panic_logger() {
    #[cfg(target_arch = "wasm32")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            std::panic::set_hook(Box::new(|info| crate::log::error(&format!("plugin panicked: {info}"))));
        });
    }
}
