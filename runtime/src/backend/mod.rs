//! Inference backends: prepare a model once, run it many times.
//!
//! The triad, as in tract's own runtime: a [`Backend`] turns ONNX bytes into a
//! [`PreparedModel`] (parsed, validated, planned), which runs batches of inputs. Preparing
//! is where a model that cannot run is refused, with the model and the op named. Running is
//! thread-safe and reuses per-batch-size plans and state, so nothing is re-planned per call.
//!
//! The first dimension of every input and output is the batch: a model accepts any batch
//! size from 1 up, and `run` on a batch of N equals N runs of batch 1. Every other dimension
//! is fixed at load: by the file, or, where the file leaves one free, by [`PrepareOptions`]
//! (`[models.X.inputs.Y]` in a node config). Inputs and outputs carry the names the ONNX
//! graph gives them, whatever the backend rewrites inside.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use crate::tensor::{DType, Tensor};

pub(crate) mod cpu;
mod quant;
pub(crate) mod tract;
#[cfg(feature = "gpu")]
pub(crate) mod wgpu;

/// Name, element type and per-item shape (without the batch dimension) of a model input
/// or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Name in the model graph.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape of one item; the batch dimension is implicit and comes first.
    pub item_shape: Vec<usize>,
}

impl TensorSpec {
    /// `name f32 [batch, 1, 28, 28]`, for `edge-node check` and logs.
    pub fn describe(&self) -> String {
        let dims: Vec<String> = std::iter::once("batch".to_owned())
            .chain(self.item_shape.iter().map(ToString::to_string))
            .collect();
        format!("{} {} [{}]", self.name, self.dtype, dims.join(", "))
    }
}

/// How a config fixes one input's shape (`[models.X.inputs.Y]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputShape {
    /// The file's name for the input's first dimension, the batch (`batch = "N"`). When
    /// set, a file that names that dimension otherwise is refused, and the name stands for
    /// the batch wherever else the file uses it.
    pub batch: Option<String>,
    /// The dimensions after the batch (`shape = [3, 32, 100]`); each must agree with the
    /// file where the file fixes it. `None`: as the file says.
    pub dims: Option<Vec<usize>>,
}

/// What preparing a model needs besides the file: what the config fixes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrepareOptions {
    /// Input shapes by input name. An input the file does not have is refused.
    pub inputs: BTreeMap<String, InputShape>,
}

/// How a model's arithmetic is actually carried out by a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// Floating point throughout.
    Fp32,
    /// Quantised ops that the backend runs as int8 arithmetic.
    Int8,
    /// Quantised in the file (QDQ or per-channel) but computed in fp32 by this backend.
    Int8AsFp32,
}

impl Precision {
    /// Short lowercase description for `edge-node check` and logs.
    pub fn describe(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Int8 => "int8 (runs as int8)",
            Precision::Int8AsFp32 => "int8 in the file, computed in fp32 by this backend",
        }
    }
}

/// What a prepared model takes and gives, and what it costs.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// Model name (from the node config or the caller).
    pub name: String,
    /// Inputs in graph order.
    pub inputs: Vec<TensorSpec>,
    /// Outputs in graph order.
    pub outputs: Vec<TensorSpec>,
    /// Multiply-accumulates for one item (batch 1), counted from the graph.
    pub macs_per_item: u64,
    /// How the arithmetic runs.
    pub precision: Precision,
}

/// Which implementation runs a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// tract, on the CPU.
    Tract,
    /// wgpu compute shaders, on a GPU (or lavapipe).
    Wgpu,
}

impl BackendKind {
    /// Lowercase name as in configs and figures (`tract`, `wgpu`).
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Tract => "tract",
            BackendKind::Wgpu => "wgpu",
        }
    }
}

/// Why a model could not be prepared or run. Every message names the model.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The bytes are not a model this backend can parse.
    #[error("model {model}: cannot parse the ONNX file: {why}")]
    Parse {
        /// Model name.
        model: String,
        /// Parser's explanation.
        why: String,
    },
    /// The graph has an op this backend cannot run.
    #[error("model {model}: node {node} uses op {op}, which the {backend} backend cannot run")]
    UnsupportedOp {
        /// Model name.
        model: String,
        /// Node name in the graph.
        node: String,
        /// Op type.
        op: String,
        /// Backend name.
        backend: &'static str,
    },
    /// The model's inputs cannot be served as the file and the config declare them (free or
    /// contradictory dimensions, element types): no backend can run it until that changes.
    #[error("model {model}: {why}")]
    Inputs {
        /// Model name.
        model: String,
        /// Which input, and what to set.
        why: String,
    },
    /// The graph is valid but does not fit what a node can serve (shapes, types, counts).
    #[error("model {model}: {why}")]
    Unsupported {
        /// Model name.
        model: String,
        /// What does not fit.
        why: String,
    },
    /// Inputs given to `run` do not match the model.
    #[error("model {model}: bad input: {why}")]
    Input {
        /// Model name.
        model: String,
        /// What is wrong with the input.
        why: String,
    },
    /// The backend failed while running a valid input.
    #[error("model {model}: inference failed: {why}")]
    Run {
        /// Model name.
        model: String,
        /// Backend's explanation.
        why: String,
    },
    /// No device, or the device was lost.
    #[error("{backend} backend: device unavailable: {why}")]
    Device {
        /// Backend name.
        backend: &'static str,
        /// What happened.
        why: String,
    },
}

/// Turns model files into [`PreparedModel`]s.
pub trait Backend: Send + Sync + Debug {
    /// Which implementation this is.
    fn kind(&self) -> BackendKind;

    /// Parses, validates and plans `onnx` (the bytes of an ONNX file) as model `name`, its
    /// input shapes as the file gives them.
    fn prepare(&self, name: &str, onnx: &[u8]) -> Result<Arc<dyn PreparedModel>, BackendError> {
        self.prepare_with(name, onnx, &PrepareOptions::default())
    }

    /// [`Backend::prepare`] with input shapes fixed by `options`.
    fn prepare_with(
        &self,
        name: &str,
        onnx: &[u8],
        options: &PrepareOptions,
    ) -> Result<Arc<dyn PreparedModel>, BackendError>;
}

/// A model ready to run batches. Cheap to share across threads.
pub trait PreparedModel: Send + Sync + Debug {
    /// Inputs, outputs, cost, precision.
    fn info(&self) -> &ModelInfo;

    /// Runs one batch: one tensor per model input, in graph order, each shaped
    /// `[batch, item_shape...]` with the same batch. Returns one tensor per output.
    fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, BackendError>;

    /// Whether `run` computes on the caller's thread (true), rather than waiting for another
    /// thread or a device to do it (a batching queue, a GPU). The sandbox runs a model that
    /// waits off the async runtime's workers, so the wait holds no worker.
    fn computes_on_caller(&self) -> bool {
        true
    }
}

/// Checks `inputs` against `info` and returns the batch size.
pub fn check_inputs(info: &ModelInfo, inputs: &[Tensor]) -> Result<usize, BackendError> {
    let bad = |why: String| BackendError::Input { model: info.name.clone(), why };
    if inputs.len() != info.inputs.len() {
        return Err(bad(format!("expected {} input tensors, got {}", info.inputs.len(), inputs.len())));
    }
    let mut batch = None;
    for (spec, t) in info.inputs.iter().zip(inputs) {
        if t.dtype() != spec.dtype {
            return Err(bad(format!("input {} must be {}, got {}", spec.name, spec.dtype, t.dtype())));
        }
        let shape = t.shape();
        if shape.len() != spec.item_shape.len() + 1 || shape[1..] != spec.item_shape[..] {
            return Err(bad(format!(
                "input {} must be shaped [batch, {}], got {shape:?}",
                spec.name,
                spec.item_shape.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            )));
        }
        if shape[0] == 0 {
            return Err(bad(format!("input {} has an empty batch", spec.name)));
        }
        match batch {
            None => batch = Some(shape[0]),
            Some(b) if b != shape[0] => {
                return Err(bad(format!("inputs disagree on batch size: {b} and {}", shape[0])));
            }
            Some(_) => {}
        }
    }
    batch.ok_or_else(|| bad("model has no inputs".into()))
}
