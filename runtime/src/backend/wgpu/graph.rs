//! The model as the GPU runs it: activations, constants and a list of kernel steps.
//! [`super::import`] builds it from tract's typed graph, [`super::fuse`] folds steps into
//! their neighbours, and [`super::plan`] turns it into buffers and dispatches.

use crate::backend::quant::Requant;

/// Index of an activation (one device buffer per plan) in [`Graph::values`].
pub(crate) type ValueId = usize;

/// How an activation's elements are held on the device: 32 bits each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Elem {
    /// fp32.
    F32,
    /// An 8-bit quantised value (u8 or i8), held as an i32.
    Int,
}

/// One activation: its element kind and element count per batch item.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Value {
    pub(crate) elem: Elem,
    pub(crate) per_item: usize,
}

/// Geometry of a 2-D window op (convolution or pooling) on one item, NCHW.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Window {
    pub(crate) ci: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) co: usize,
    pub(crate) oh: usize,
    pub(crate) ow: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) sh: usize,
    pub(crate) sw: usize,
    pub(crate) ph: usize,
    pub(crate) pw: usize,
    pub(crate) dh: usize,
    pub(crate) dw: usize,
}

/// An int8 conv or matmul: its per-tensor requantisation, and what [`super::fuse`] folded
/// around it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Int8Op {
    /// The QLinearConv or QLinearMatMul parameters.
    pub(crate) requant: Requant,
    /// Fused prologue: the input arrives as fp32 and is quantised on load.
    pub(crate) quantize_input: Option<Quantize>,
    /// Fused epilogue: the requantised output is dequantised to fp32 (scale, zero point).
    pub(crate) dequantize: Option<(f32, i32)>,
    /// Fused epilogue after dequantising: an fp32 bias, stored after the int bias.
    pub(crate) fp32_bias: bool,
}

impl Int8Op {
    /// The op with nothing fused around it yet.
    pub(crate) fn new(requant: Requant) -> Int8Op {
        Int8Op { requant, quantize_input: None, dequantize: None, fp32_bias: false }
    }
}

/// Parameters of a QuantizeLinear: `clamp(round(x * scale) + zp, lo, hi)`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quantize {
    pub(crate) scale: f32,
    pub(crate) zp: i32,
    pub(crate) lo: i32,
    pub(crate) hi: i32,
}

/// Constant data uploaded once at prepare.
#[derive(Debug, Clone)]
pub(crate) enum Data {
    F32(Vec<f32>),
    I32(Vec<i32>),
}

/// One kernel dispatch (per batch).
#[derive(Debug, Clone)]
pub(crate) enum Step {
    /// 2-D convolution with bias (fp32 or int8), optionally fused Relu (fp32) and a fused
    /// unpadded max pool over its output (`pool`: the pool's window on the conv output).
    Conv {
        x: ValueId,
        y: ValueId,
        weights: usize,
        bias: usize,
        win: Window,
        relu: bool,
        quant: Option<Int8Op>,
        pool: Option<Window>,
    },
    /// `[M, K] x [K, N] + bias` (fp32 or int8), optionally fused Relu (fp32).
    MatMul {
        x: ValueId,
        y: ValueId,
        weights: usize,
        bias: usize,
        k: usize,
        n: usize,
        relu: bool,
        quant: Option<Int8Op>,
    },
    /// 2-D max pool (any element kind), optionally followed by a fused 256-entry lookup
    /// table (int8 values; `lut` indexes the constant).
    MaxPool { x: ValueId, y: ValueId, win: Window, lut: Option<usize> },
    /// Element-wise op (see kernels/elementwise.wgsl); `aux` indexes a constant or is None.
    Elementwise { x: ValueId, y: ValueId, op: EltOp, aux: Option<usize> },
    /// Softmax over the last axis of `len` elements.
    Softmax { x: ValueId, y: ValueId, len: usize },
}

/// Element-wise operations and their parameters.
#[derive(Debug, Clone, Copy)]
pub(crate) enum EltOp {
    Quantize { scale: f32, zp: i32, lo: i32, hi: i32 },
    Dequantize { scale: f32, zp: i32 },
    Lookup,
    AddBroadcast { len: usize },
    Relu,
}

/// A model as GPU steps over per-item activations.
#[derive(Debug, Clone)]
pub(crate) struct Graph {
    pub(crate) values: Vec<Value>,
    pub(crate) consts: Vec<Data>,
    pub(crate) steps: Vec<Step>,
    /// Input activations, in model input order (all fp32).
    pub(crate) inputs: Vec<ValueId>,
    /// Output activations and their per-item shapes, in model output order (all fp32).
    pub(crate) outputs: Vec<(ValueId, Vec<usize>)>,
    /// True when some convolution or matmul runs on int8 values.
    pub(crate) int8: bool,
}

impl Step {
    /// The activations the step reads.
    pub(crate) fn reads(&self) -> Vec<ValueId> {
        match self {
            Step::Conv { x, .. }
            | Step::MatMul { x, .. }
            | Step::MaxPool { x, .. }
            | Step::Elementwise { x, .. }
            | Step::Softmax { x, .. } => vec![*x],
        }
    }
}
