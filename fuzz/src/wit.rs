//! Structured guest values: what a plugin can return through the WIT boundary, built with
//! `arbitrary` and turned into the wasmtime-generated WIT types the host checks.
//!
//! Random bytes almost never make a tensor whose data fits its shape, so the tensor data is
//! either raw (any length) or "fitting": exactly as long as the shape and type need, which
//! reaches the host's conversions past the length check. Dimensions are mostly small.

use arbitrary::Arbitrary;
use cascade_runtime::fuzzing::wit;
use cascade_runtime::{DType, ModelInfo, Precision, PreparedModel, Tensor, TensorSpec};

/// Most tensor bytes a "fitting" tensor gets; larger shapes fall back to empty data.
const MAX_FITTING_BYTES: usize = 1 << 16;

/// The element type of a tensor, as a guest names it.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Fp32,
    U8,
    I8,
    I32,
    I64,
}

impl Ty {
    /// The WIT enum value.
    pub fn wit(self) -> wit::TensorType {
        match self {
            Ty::Fp32 => wit::TensorType::Fp32,
            Ty::U8 => wit::TensorType::U8,
            Ty::I8 => wit::TensorType::I8,
            Ty::I32 => wit::TensorType::I32,
            Ty::I64 => wit::TensorType::I64,
        }
    }

    /// The host's element type.
    pub fn dtype(self) -> DType {
        match self {
            Ty::Fp32 => DType::F32,
            Ty::U8 => DType::U8,
            Ty::I8 => DType::I8,
            Ty::I32 => DType::I32,
            Ty::I64 => DType::I64,
        }
    }
}

/// One dimension: mostly small, sometimes anything a `u32` holds.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Dim {
    Small(u8),
    Any(u32),
}

impl Dim {
    fn get(self) -> u32 {
        match self {
            Dim::Small(d) => u32::from(d % 8),
            Dim::Any(d) => d,
        }
    }
}

/// A tensor's data: any bytes, or exactly as many as its shape and type need.
#[derive(Arbitrary, Debug, Clone)]
pub enum Data {
    Raw(Vec<u8>),
    Fitting(u8),
}

/// A guest tensor.
#[derive(Arbitrary, Debug, Clone)]
pub struct GuestTensor {
    pub dims: Vec<Dim>,
    pub ty: Ty,
    pub data: Data,
}

impl GuestTensor {
    /// The WIT tensor a guest would send.
    pub fn wit(&self) -> wit::Tensor {
        let dimensions: Vec<u32> = self.dims.iter().map(|d| d.get()).collect();
        let data = match &self.data {
            Data::Raw(bytes) => bytes.clone(),
            Data::Fitting(fill) => {
                let bytes = dimensions
                    .iter()
                    .try_fold(self.ty.dtype().size(), |n, &d| n.checked_mul(d as usize))
                    .filter(|&n| n <= MAX_FITTING_BYTES)
                    .unwrap_or(0);
                vec![*fill; bytes]
            }
        };
        wit::Tensor { dimensions, ty: self.ty.wit(), data }
    }
}

/// A name from a small set (so that names collide and match model inputs), or any string.
#[derive(Arbitrary, Debug, Clone)]
pub enum Name {
    Known(u8),
    Any(String),
}

impl Name {
    pub fn get(&self) -> String {
        match self {
            Name::Known(i) => ["input", "mask", "x", ""][usize::from(*i % 4)].to_owned(),
            Name::Any(s) => s.clone(),
        }
    }
}

/// A guest's named tensor.
#[derive(Arbitrary, Debug, Clone)]
pub struct GuestNamedTensor {
    pub name: Name,
    pub tensor: GuestTensor,
}

impl GuestNamedTensor {
    pub fn wit(&self) -> wit::NamedTensor {
        wit::NamedTensor { name: self.name.get(), tensor: self.tensor.wit() }
    }
}

/// A confidence: mostly in [0, 1], sometimes any f32 (NaN, infinities, negative zero).
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Confidence {
    Unit(u16),
    Any(f32),
}

impl Confidence {
    pub fn get(self) -> f32 {
        match self {
            Confidence::Unit(x) => f32::from(x) / f32::from(u16::MAX),
            Confidence::Any(x) => x,
        }
    }
}

/// What a guest's `handle` returns on success.
#[derive(Arbitrary, Debug, Clone)]
pub enum GuestOutcome {
    Answer { outputs: Vec<GuestNamedTensor>, confidence: Confidence, label: Option<String> },
    Escalate(String),
}

impl GuestOutcome {
    pub fn wit(&self) -> wit::Outcome {
        match self {
            GuestOutcome::Answer { outputs, confidence, label } => wit::Outcome::Answer(wit::Answer {
                outputs: outputs.iter().map(GuestNamedTensor::wit).collect(),
                confidence: confidence.get(),
                label: label.clone(),
            }),
            GuestOutcome::Escalate(reason) => wit::Outcome::Escalate(reason.clone()),
        }
    }
}

/// A model input as a model declares it: the guest's tensors are checked against these.
#[derive(Arbitrary, Debug, Clone)]
pub struct Spec {
    pub name: Name,
    pub ty: Ty,
    pub item_shape: Vec<Dim>,
}

/// A model that is only its signature: `guest_model_inputs` reads `info` and nothing else.
#[derive(Debug)]
pub struct Signature(pub ModelInfo);

impl Signature {
    pub fn new(specs: &[Spec]) -> Signature {
        let inputs = specs
            .iter()
            .map(|s| TensorSpec {
                name: s.name.get(),
                dtype: s.ty.dtype(),
                item_shape: s.item_shape.iter().map(|d| d.get() as usize).collect(),
            })
            .collect();
        Signature(ModelInfo {
            name: "fuzz".into(),
            inputs,
            outputs: Vec::new(),
            macs_per_item: 0,
            precision: Precision::Fp32,
        })
    }
}

impl PreparedModel for Signature {
    fn info(&self) -> &ModelInfo {
        &self.0
    }

    fn run(&self, _inputs: &[Tensor]) -> Result<Vec<Tensor>, cascade_runtime::BackendError> {
        unreachable!("the WIT boundary target never runs a model")
    }
}
