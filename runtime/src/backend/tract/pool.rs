//! A fast 2x2 stride-2 max pool, plugged into tract's typed graph as an op of its own.
//!
//! tract 0.23 runs a pool whose innermost stride is not 1 through a generic per-pixel loop,
//! a large share of a small CNN's time (`docs/performance.md`, "Pooling"). Every CNN that halves its
//! resolution with a 2x2/s2 max pool pays it, so the tract backend swaps such pools (NCHW,
//! no padding, no dilation, no index output, f32, u8 or i8) for this op at load. It computes
//! exactly what MaxPool computes: each output is the max of the same four inputs.

use tract_onnx::tract_core::internal::{
    DatumType, EvalContext, EvalOp, IntoTValue, Op, StaticName, TValue, TVec, Tensor, TractResult, TypedFact,
    TypedOp, as_op, bail, op_as_typed_op, op_out_of_plan, tvec,
};
use tract_onnx::tract_core::ndarray::ArrayD;
use tract_onnx::tract_core::ndarray::IxDyn;

use cascade_kernels::pool::pool;

/// Max over each 2x2 window, stride 2, of an NCHW tensor; odd trailing rows and columns are
/// dropped, as an unpadded ONNX MaxPool drops them.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub(crate) struct MaxPool2x2 {
    /// Element type it was planned for.
    pub(crate) datum_type: DatumType,
}

impl MaxPool2x2 {
    /// True for the element types the op implements.
    pub(crate) fn supports(dt: DatumType) -> bool {
        matches!(dt.unquantized(), DatumType::F32 | DatumType::U8 | DatumType::I8)
    }
}

impl Op for MaxPool2x2 {
    fn name(&self) -> StaticName {
        "CascadeMaxPool2x2".into()
    }

    op_as_typed_op!();
}

impl EvalOp for MaxPool2x2 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let Some(input) = inputs.first() else { bail!("MaxPool2x2 needs one input") };
        let shape = input.shape();
        if shape.len() != 4 {
            bail!("MaxPool2x2 needs an NCHW input, got shape {shape:?}");
        }
        macro_rules! run {
            ($t:ty) => {{
                let (data, out_shape) = pool(input.try_as_plain_ram()?.as_slice::<$t>()?, shape);
                Tensor::from(ArrayD::from_shape_vec(IxDyn(&out_shape), data)?)
            }};
        }
        let dt = input.datum_type();
        let mut out = match dt.unquantized() {
            DatumType::F32 => run!(f32),
            DatumType::U8 => run!(u8),
            DatumType::I8 => run!(i8),
            other => bail!("MaxPool2x2 does not implement {other:?}"),
        };
        if dt != out.datum_type() {
            // SAFETY: `dt` is a quantised view of the very element type the data was built
            // with (QU8 over u8, QI8 over i8); max pooling keeps the quantisation parameters.
            unsafe { out.set_datum_type(dt) };
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for MaxPool2x2 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let Some(input) = inputs.first() else { bail!("MaxPool2x2 needs one input") };
        let Some(shape) = input.shape.as_concrete() else { bail!("MaxPool2x2 needs a concrete input shape") };
        if shape.len() != 4 {
            bail!("MaxPool2x2 needs an NCHW input, got shape {shape:?}");
        }
        let out: &[usize] = &[shape[0], shape[1], shape[2] / 2, shape[3] / 2];
        Ok(tvec!(TypedFact::dt_shape(input.datum_type, out)))
    }

    as_op!();
}
