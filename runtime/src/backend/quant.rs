//! Per-tensor int8 quantisation as both backends read it from tract's typed graph.
//!
//! A QLinearConv or QLinearMatMul reaches the typed graph as a `Conv` or `EinSum` with
//! `q_params` set, whose inputs 3 to 8 are the input, weight and output zero points and
//! scales. Both backends turn those six parameters into the same [`Requant`]; this module is
//! where they are read, and where the multiplier is combined, so the tract and wgpu
//! backends cannot drift apart on either. Per-channel weight scales (one per output
//! channel, as QDQ files folded by `tract/qdq.rs` have them) are read here too, for tract's
//! direct convolution.

use tract_onnx::prelude::{DatumType, Tensor, TypedModel};

/// Per-tensor requantisation of an int8 convolution or matmul: the i32 accumulator
/// `sum((x - x_zero) * (w - w_zero)) + bias` becomes
/// `clamp(round_ties_even(acc * mult) + y_zero, lo, hi)`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Requant {
    /// Input zero point.
    pub(crate) x_zero: i32,
    /// Weight zero point.
    pub(crate) w_zero: i32,
    /// Output zero point.
    pub(crate) y_zero: i32,
    /// `x_scale * w_scale / y_scale`, in f32 and in that order, as tract combines them.
    pub(crate) mult: f32,
    /// Smallest output value: the output element type's ([`int_range`]).
    pub(crate) lo: i32,
    /// Largest output value.
    pub(crate) hi: i32,
}

impl Requant {
    /// The requantisation of node `id`, a `Conv` or `EinSum` with `q_params`: inputs 3 to 8
    /// are x zero point, x scale, w zero point, w scale, y zero point, y scale. `None` unless
    /// all six are constant scalars and the node outputs u8 or i8.
    pub(crate) fn of_node(model: &TypedModel, id: usize) -> Option<Requant> {
        let (rq, w_scales, y_scale) = Requant::read(model, id, 1)?;
        Some(Requant { mult: rq.x_scale * w_scales[0] / y_scale, ..rq.requant })
    }

    /// As [`Requant::of_node`], but the weight scale may also hold one value per output
    /// channel (`channels` of them), as per-channel quantisers write it: the requantisation
    /// and each channel's multiplier, combined in the same order as [`Requant::mult`]. The
    /// weight zero point may be per channel too, if every channel has the same one.
    pub(crate) fn per_channel_of_node(
        model: &TypedModel,
        id: usize,
        channels: usize,
    ) -> Option<(Requant, Vec<f32>)> {
        let (rq, w_scales, y_scale) = Requant::read(model, id, channels)?;
        let mults: Vec<f32> = (0..channels)
            .map(|c| rq.x_scale * w_scales[if w_scales.len() == 1 { 0 } else { c }] / y_scale)
            .collect();
        Some((Requant { mult: mults[0], ..rq.requant }, mults))
    }

    /// The six parameters, the weight scale and zero point holding 1 or `channels` values.
    fn read(model: &TypedModel, id: usize, channels: usize) -> Option<(Read, Vec<f32>, f32)> {
        let node = model.node(id);
        let konst = |ix: usize, lens: &[usize]| {
            let outlet = node.inputs.get(ix)?;
            model.outlet_fact(*outlet).ok()?.konst.clone().filter(|t| lens.contains(&t.len()))
        };
        let floats = |t: &Tensor| {
            Some(t.cast_to::<f32>().ok()?.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?.to_vec())
        };
        let zero = |ix: usize| konst(ix, &[1]).and_then(|t| ints(&t)).map(|v| v[0]);
        let scale = |ix: usize| konst(ix, &[1]).and_then(|t| floats(&t)).map(|v| v[0]);
        let w_zeros = konst(5, &[1, channels]).and_then(|t| ints(&t))?;
        let w_zero = w_zeros[0];
        let w_scales = konst(6, &[1, channels]).and_then(|t| floats(&t))?;
        if w_zeros.iter().any(|&z| z != w_zero) {
            return None;
        }
        let (x_zero, x_scale, y_zero, y_scale) = (zero(3)?, scale(4)?, zero(7)?, scale(8)?);
        let (lo, hi) = int_range(model.outlet_fact(node.id.into()).ok()?.datum_type)?;
        let requant = Requant { x_zero, w_zero, y_zero, mult: 0.0, lo, hi };
        Some((Read { requant, x_scale }, w_scales, y_scale))
    }
}

/// What [`Requant::read`] reads besides the scales it returns apart.
struct Read {
    requant: Requant,
    x_scale: f32,
}

// tract compares ops to merge identical nodes: equality is bitwise, so it is an equivalence.
impl PartialEq for Requant {
    fn eq(&self, other: &Requant) -> bool {
        (self.x_zero, self.w_zero, self.y_zero, self.mult.to_bits(), self.lo, self.hi)
            == (other.x_zero, other.w_zero, other.y_zero, other.mult.to_bits(), other.lo, other.hi)
    }
}
impl Eq for Requant {}

/// Range of an 8-bit integer element type, quantised or not: 0..=255 for u8, -128..=127
/// for i8; `None` for any other type.
pub(crate) fn int_range(dt: DatumType) -> Option<(i32, i32)> {
    match dt.unquantized() {
        DatumType::U8 => Some((0, 255)),
        DatumType::I8 => Some((-128, 127)),
        _ => None,
    }
}

/// The values of an integer tensor as i32; quantised element types (QU8, QI8) are read
/// through their integer storage.
pub(crate) fn ints(t: &Tensor) -> Option<Vec<i32>> {
    let plain = if t.datum_type().is_quantized() {
        let mut copy = t.clone();
        // SAFETY: a quantised type has the same storage as its unquantised element type.
        unsafe { copy.set_datum_type(t.datum_type().unquantized()) };
        copy
    } else {
        t.clone()
    };
    Some(plain.cast_to::<i32>().ok()?.to_plain_array_view::<i32>().ok()?.iter().copied().collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tract_onnx::prelude::TypedFact;
    use tract_onnx::tract_core::internal::{SpecialOps, tensor0};
    use tract_onnx::tract_core::ops::einsum::EinSum;

    const SCALARS: &str = "mk,kn,,,,,,,->mn";

    /// A QLinearMatMul as tract's typed graph holds it, with the given parameters, `axes`
    /// mapping them (`"mk,kn,,,,,,,->mn"` for scalars).
    fn qmatmul(axes: &str, zeros: [Tensor; 3], scales: [f32; 3], out: DatumType) -> (TypedModel, usize) {
        let mut model = TypedModel::default();
        let x = model.add_source("x", TypedFact::dt_shape(DatumType::U8, [1usize, 2])).unwrap();
        let w = model.add_const("w", Tensor::from_shape(&[2, 3], &[1i8, 2, 3, 4, 5, 6]).unwrap()).unwrap();
        let bias = model.add_const("bias", tensor0(0i32)).unwrap();
        let [xz, wz, yz] = zeros;
        let params = [xz, tensor0(scales[0]), wz, tensor0(scales[1]), yz, tensor0(scales[2])];
        let mut inputs = vec![x, w, bias];
        for (ix, t) in params.into_iter().enumerate() {
            inputs.push(model.add_const(format!("q{ix}"), t).unwrap());
        }
        let op = EinSum { axes: axes.parse().unwrap(), operating_dt: DatumType::I32, q_params: Some(out) };
        let y = model.wire_node("mm", op, &inputs).unwrap()[0];
        (model, y.node)
    }

    #[test]
    fn reads_the_six_parameters_and_combines_the_scales_as_tract_does() {
        let (xs, ws, ys) = (0.003921569f32, 0.00523031f32, 0.01079464f32);
        let zeros = [tensor0(3u8), tensor0(-2i8), tensor0(7i32)];
        let (model, id) = qmatmul(SCALARS, zeros, [xs, ws, ys], DatumType::U8);
        let rq = Requant::of_node(&model, id).unwrap();
        assert_eq!((rq.x_zero, rq.w_zero, rq.y_zero, rq.lo, rq.hi), (3, -2, 7, 0, 255));
        // tract's own order for convolutions is (k_scale * x_scale) / y_scale: the same bits.
        assert_eq!(rq.mult.to_bits(), (ws * xs / ys).to_bits());
        assert_eq!(rq.mult.to_bits(), (xs * ws / ys).to_bits());
    }

    #[test]
    fn takes_the_output_range_and_refuses_per_channel_parameters() {
        let zeros = [tensor0(0u8), tensor0(0i8), tensor0(0i8)];
        let (model, id) = qmatmul(SCALARS, zeros, [0.5, 0.25, 2.0], DatumType::I8);
        assert_eq!(Requant::of_node(&model, id).map(|rq| (rq.lo, rq.hi)), Some((-128, 127)));
        let per_channel = [tensor0(0u8), Tensor::from_shape(&[3], &[0i8, 1, 2]).unwrap(), tensor0(0i8)];
        let (model, id) = qmatmul("mk,kn,,,,n,,,->mn", per_channel, [0.5, 0.25, 2.0], DatumType::U8);
        assert_eq!(Requant::of_node(&model, id), None);
    }

    #[test]
    fn integer_ranges_are_those_of_8_bit_types_quantised_or_not() {
        use tract_onnx::prelude::QParams;
        let qu8 = DatumType::QU8(QParams::ZpScale { zero_point: 3, scale: 0.5 });
        assert_eq!(
            [qu8, DatumType::U8, DatumType::I8].map(int_range),
            [Some((0, 255)), Some((0, 255)), Some((-128, 127))]
        );
        assert_eq!(int_range(DatumType::I32), None);
    }
}
