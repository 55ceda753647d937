// Part of guest-sdk/src/bindings.rs: written by tools/bindgen.sh, do not edit.
#[used]
#[doc(hidden)]
static __FORCE_SECTION_REF: fn() = super::super::super::__link_custom_section_describing_imports;
use super::super::super::_rt;
/// Element type of a tensor. Elements are stored little-endian.
#[repr(u8)]
#[derive(Clone, Copy, Eq, Ord, PartialEq, PartialOrd)]
pub enum TensorType {
    /// 32-bit IEEE float.
    Fp32,
    /// Unsigned byte.
    U8,
    /// Signed byte.
    I8,
    /// 32-bit signed integer.
    I32,
    /// 64-bit signed integer.
    I64,
}
impl ::core::fmt::Debug for TensorType {
    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        match self {
            TensorType::Fp32 => f.debug_tuple("TensorType::Fp32").finish(),
            TensorType::U8 => f.debug_tuple("TensorType::U8").finish(),
            TensorType::I8 => f.debug_tuple("TensorType::I8").finish(),
            TensorType::I32 => f.debug_tuple("TensorType::I32").finish(),
            TensorType::I64 => f.debug_tuple("TensorType::I64").finish(),
        }
    }
}
impl TensorType {
    #[doc(hidden)]
    pub unsafe fn _lift(val: u8) -> TensorType {
        if !cfg!(debug_assertions) {
            return unsafe { ::core::mem::transmute(val) };
        }
        match val {
            0 => TensorType::Fp32,
            1 => TensorType::U8,
            2 => TensorType::I8,
            3 => TensorType::I32,
            4 => TensorType::I64,
            _ => panic!("invalid enum discriminant"),
        }
    }
}
/// A dense tensor, shaped like wasi-nn's: dimensions, element type, raw bytes.
///
/// Invariant checked by the host on every crossing: `data` holds exactly
/// `product(dimensions) * size-of(ty)` bytes. An empty `dimensions` list is a scalar.
#[derive(Clone)]
pub struct Tensor {
    /// Shape, outermost dimension first.
    pub dimensions: _rt::Vec<u32>,
    /// Element type.
    pub ty: TensorType,
    /// Elements, row-major, little-endian.
    pub data: _rt::Vec<u8>,
}
impl ::core::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        f.debug_struct("Tensor")
            .field("dimensions", &self.dimensions)
            .field("ty", &self.ty)
            .field("data", &self.data)
            .finish()
    }
}
/// A tensor with the name of the model input or output it belongs to.
#[derive(Clone)]
pub struct NamedTensor {
    /// Input or output name (for a model: the name in its graph; for a request: the
    /// name the client gave).
    pub name: _rt::String,
    /// The tensor.
    pub tensor: Tensor,
}
impl ::core::fmt::Debug for NamedTensor {
    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        f.debug_struct("NamedTensor")
            .field("name", &self.name)
            .field("tensor", &self.tensor)
            .finish()
    }
}
/// One inference request, as the node received it.
#[derive(Clone)]
pub struct Request {
    /// The route (endpoint) the request came in on.
    pub route: _rt::String,
    /// The request's input tensors.
    pub inputs: _rt::Vec<NamedTensor>,
    /// Free-form request parameters (key, value), in the order the client sent them.
    pub parameters: _rt::Vec<(_rt::String, _rt::String)>,
}
impl ::core::fmt::Debug for Request {
    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        f.debug_struct("Request")
            .field("route", &self.route)
            .field("inputs", &self.inputs)
            .field("parameters", &self.parameters)
            .finish()
    }
}
/// A local answer.
#[derive(Clone)]
pub struct Answer {
    /// Output tensors to return to the client.
    pub outputs: _rt::Vec<NamedTensor>,
    /// How sure the plugin is of this answer, in [0, 1]. The node compares it with the
    /// route's threshold to decide whether to escalate. NaN or out of range is refused.
    pub confidence: f32,
    /// Optional human-readable label (e.g. the predicted class).
    pub label: Option<_rt::String>,
}
impl ::core::fmt::Debug for Answer {
    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        f.debug_struct("Answer")
            .field("outputs", &self.outputs)
            .field("confidence", &self.confidence)
            .field("label", &self.label)
            .finish()
    }
}
/// What the plugin decided.
#[derive(Clone)]
pub enum Outcome {
    /// Answer locally.
    Answer(Answer),
    /// Ask the node to send the request upstream; the string says why.
    Escalate(_rt::String),
}
impl ::core::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        match self {
            Outcome::Answer(e) => f.debug_tuple("Outcome::Answer").field(e).finish(),
            Outcome::Escalate(e) => f.debug_tuple("Outcome::Escalate").field(e).finish(),
        }
    }
}
/// Why the plugin could not handle a request. The node returns it to the client.
#[derive(Clone)]
pub enum PluginError {
    /// The request is malformed for this plugin (missing input, wrong shape, ...).
    BadRequest(_rt::String),
    /// A call to the inference capability failed.
    Inference(_rt::String),
    /// Anything else that went wrong inside the plugin.
    Internal(_rt::String),
}
impl ::core::fmt::Debug for PluginError {
    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        match self {
            PluginError::BadRequest(e) => {
                f.debug_tuple("PluginError::BadRequest").field(e).finish()
            }
            PluginError::Inference(e) => {
                f.debug_tuple("PluginError::Inference").field(e).finish()
            }
            PluginError::Internal(e) => {
                f.debug_tuple("PluginError::Internal").field(e).finish()
            }
        }
    }
}
impl ::core::fmt::Display for PluginError {
    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        write!(f, "{:?}", self)
    }
}
impl std::error::Error for PluginError {}
