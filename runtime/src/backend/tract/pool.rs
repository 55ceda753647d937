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

/// The 2x2/s2 max pool of an NCHW tensor of `shape`: the data and the output shape.
pub(crate) fn pool<T: Copy + PartialOrd + Default>(input: &[T], shape: &[usize]) -> (Vec<T>, Vec<usize>) {
    let (oh, ow) = (shape[2] / 2, shape[3] / 2);
    let mut out = vec![T::default(); shape[0] * shape[1] * oh * ow];
    pool_into(input, shape, &mut out);
    (out, vec![shape[0], shape[1], oh, ow])
}

/// [`pool`] into `out`, which holds `shape[0] * shape[1] * (h / 2) * (w / 2)` elements.
pub(crate) fn pool_into<T: Copy + PartialOrd>(input: &[T], shape: &[usize], out: &mut [T]) {
    let (h, w) = (shape[2], shape[3]);
    let (oh, ow) = (h / 2, w / 2);
    let max = |a: T, b: T| if b > a { b } else { a };
    if oh * ow == 0 {
        return;
    }
    for (plane, dst) in input.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow)) {
        for (oy, dst) in dst.chunks_exact_mut(ow).enumerate() {
            // Exact-length slices let the compiler drop bounds checks and vectorise.
            let top = &plane[2 * oy * w..][..2 * ow];
            let bottom = &plane[(2 * oy + 1) * w..][..2 * ow];
            for (x, d) in dst.iter_mut().enumerate() {
                *d = max(max(top[2 * x], top[2 * x + 1]), max(bottom[2 * x], bottom[2 * x + 1]));
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_each_window_and_drops_odd_edges() {
        // One plane, 3x5: the last row and column have no full window.
        let input: Vec<f32> = vec![
            1., 5., 2., 0., 9., //
            3., 4., 8., 7., 9., //
            9., 9., 9., 9., 9.,
        ];
        let (out, shape) = pool(&input, &[1, 1, 3, 5]);
        assert_eq!(shape, [1, 1, 1, 2]);
        assert_eq!(out, [5., 8.]);
        let (out, _) = pool(&[0u8, 200, 3, 4, 255, 1, 2, 3], &[2, 1, 2, 2]);
        assert_eq!(out, [200, 255]);
    }
}
