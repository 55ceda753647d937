//! An im2col-free 2-D convolution, plugged into tract's typed graph as an op of its own.
//!
//! tract 0.23 lowers every convolution to im2col + matrix multiply. On the small CNNs an edge
//! node runs (few input channels, 3x3 kernels, 28x28 planes) building the im2col matrix is a
//! large share of an image's time, and for int8 tract builds it eagerly in u8, which made
//! the int8 edge model slower than its fp32 twin. This op computes the convolution directly
//! from a zero-padded copy of the input: for each output row and each block of output
//! channels it keeps a tile of accumulators in registers and adds `weight * input row` once
//! per kernel tap: AVX-512 (16 accumulators: 2 rows x 16 columns x 8 channels) or AVX2+FMA
//! (8 accumulators: 2 rows x 8 columns x 4 channels) kernels chosen at run time, and a
//! plain-Rust kernel everywhere else (baseline x86-64, aarch64). Weights are packed at load
//! in the order the loop reads them. An fp32 3x3 convolution with a fused pool and enough
//! input channels runs instead as Winograd F(2x2, 3x3) on AVX-512 or AVX2
//! ([`cascade_kernels::winograd`]): 2.25x fewer multiplies, the same outputs up to rounding.
//! The kernels themselves are in the `cascade-kernels` crate (`kernels/`); this file is the
//! op: what it fuses, its int8 edges, its buffers.
//!
//! Fused, all exactly (see [`super::rewrite::rewrite_convs`]): the bias; a following Relu
//! (fp32); a following 2x2/s2 MaxPool (Relu and requantisation are non-decreasing, so
//! pooling the accumulators first is the same); for int8, the f32-to-u8 QuantizeLinear that
//! feeds the convolution and a u8 LookupTable that follows it.
//!
//! What it changed, measured against onnxruntime in the same run: `docs/performance.md`,
//! "Direct convolution".
//!
//! Scope (anything else stays on tract's own op): NCHW with a batch axis, OIHW weights, one
//! group, stride 1, no dilation, any zero padding, constant weights and bias; fp32, or the
//! quantised form (QLinearConv: u8/i8 input and weights, scalar scales and zero points, or
//! a weight scale per output channel, which gives each channel its own multiplier; u8/i8
//! output).
//!
//! int8 runs on the CPU's integer multiply-add instructions where it has them
//! ([`cascade_kernels::intconv`]: AVX-512 VNNI, AVX-VNNI, AVX2, `sdot`), and otherwise on the same fp32 loop,
//! exactly: the input and weights are shifted by their zero points into small integers, whose products and sums are integers that f32 represents
//! exactly while they stay below 2^24 in magnitude. The rewrite checks that bound per output
//! channel at load (sum of |weight| times the largest |input|, plus |bias|) and leaves the
//! convolution to tract if it could be exceeded. The integer accumulator is then requantised
//! as tract does it: multiplied by the combined scale ([`Requant::mult`]) with tract's
//! fixed-point `Scaler` (round half to even), offset by the output zero point, clamped.

use tract_onnx::tract_core::internal::{
    DatumType, EvalContext, EvalOp, IntoTValue, LaneId, Op, OpState, StaticName, TValue, TVec, Tensor,
    TractResult, TypedFact, TypedOp, as_op, bail, op_as_typed_op, op_out_of_plan, tvec,
};
use tract_onnx::tract_core::ndarray::{ArrayD, IxDyn};

use cascade_kernels::direct::{convolve, pack, pad_bias, pools_in_kernel};
use cascade_kernels::intconv::{IntConv, Packed};
use cascade_kernels::quantize::{MAX_SCALE, Quantized, quantize_all, requantize_all};
use cascade_kernels::{ConvGeometry, copy_row, sized, winograd};

use crate::backend::quant::Requant;
use scratch::Scratch;

mod scratch;
#[cfg(test)]
mod tests;

/// Largest magnitude up to which every integer is exact in f32.
const F32_EXACT: f64 = 16_777_216.0;

/// The int8 form's output: how the integer accumulator is requantised, and the element type
/// it is stored as.
#[derive(Debug, Clone)]
pub(crate) struct Int8Output {
    /// The QLinearConv parameters.
    pub(crate) requant: Requant,
    /// Output element type (u8 or i8, possibly with quantisation parameters attached).
    pub(crate) output: DatumType,
    /// Per-channel weight scales: each output channel's multiplier, used instead of
    /// `requant.mult`. `None` for per-tensor parameters, which keep the one multiplier.
    pub(crate) channel_mults: Option<Vec<f32>>,
}

impl Int8Output {
    /// The multiplier of output channel `c`.
    fn mult(&self, c: usize) -> f32 {
        self.channel_mults.as_ref().map_or(self.requant.mult, |m| m[c])
    }
}

// Bitwise, as for [`DirectConv`].
impl PartialEq for Int8Output {
    fn eq(&self, other: &Int8Output) -> bool {
        let bits =
            |m: &Option<Vec<f32>>| m.as_ref().map(|m| m.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        self.requant == other.requant
            && self.output == other.output
            && bits(&self.channel_mults) == bits(&other.channel_mults)
    }
}
impl Eq for Int8Output {}

/// A direct convolution with its bias, and optionally a Relu, fused.
#[derive(Debug, Clone)]
pub(crate) struct DirectConv {
    pub(crate) geo: ConvGeometry,
    /// Weights packed for the kernels ([`pack`]): blocks of eight output channels, the last
    /// padded with zeros. For int8, weights minus their zero point.
    packed: Vec<f32>,
    /// Bias per output channel, padded to whole blocks (int8: the i32 bias, exact in f32).
    bias: Vec<f32>,
    /// Clamp negative outputs to zero (a fused Relu); fp32 only.
    pub(crate) relu: bool,
    /// Max over each 2x2 window, stride 2, after the convolution (a fused MaxPool; odd
    /// trailing rows and columns dropped). Exact: Relu and requantisation are
    /// non-decreasing, so pooling before them equals pooling after.
    pub(crate) pool: bool,
    /// Set for the int8 form.
    pub(crate) int8: Option<Int8Output>,
    /// int8 form only: the range of the input's integer type (u8 or i8).
    x_range: (i32, i32),
    /// int8 form only, on a CPU with integer multiply-add instructions and weights that fit
    /// an i8: the same convolution on those instructions ([`cascade_kernels::intconv`]).
    int: Option<IntConv>,
    /// Set by [`DirectConv::fuse_pool`] for an fp32 3x3 convolution on a CPU that runs
    /// [`winograd`]: `packed`'s kernels transformed, and the convolution runs there. Derived
    /// from `packed` and `pool`, so equality need not compare it.
    winograd: Option<Vec<f32>>,
    /// int8 form only: the input arrives in f32 and is quantised to the input's integer type
    /// on load, as the QuantizeLinear it replaces did (`(scale, zero point)`, tract's
    /// convention: the value is multiplied by `scale`).
    pub(crate) quantize_input: Option<(f32, i32)>,
    /// int8 form with a u8 output only: a 256-entry table applied to each output (the
    /// LookupTable tract puts between a pool and the next layer to change the
    /// quantisation), and the element type it outputs.
    pub(crate) lookup: Option<(Vec<u8>, DatumType)>,
}

impl DirectConv {
    /// An fp32 convolution: `weights` is OIHW, `bias` one value per output channel.
    pub(crate) fn fp32(geo: ConvGeometry, weights: &[f32], bias: &[f32], relu: bool) -> Option<DirectConv> {
        if weights.len() != geo.cout * geo.taps() || bias.len() != geo.cout {
            return None;
        }
        Some(DirectConv {
            geo,
            packed: pack(&geo, weights),
            bias: pad_bias(&geo, bias),
            relu,
            pool: false,
            int8: None,
            x_range: (0, 0),
            int: None,
            winograd: None,
            quantize_input: None,
            lookup: None,
        })
    }

    /// An int8 convolution: `weights` are the stored integers (OIHW), `bias` the i32 bias;
    /// `x_range` is the input type's range. `None` when the f32 accumulator could leave the
    /// exact-integer range.
    pub(crate) fn int8(
        geo: ConvGeometry,
        weights: &[i32],
        bias: &[i32],
        x_range: (i32, i32),
        int8: Int8Output,
    ) -> Option<DirectConv> {
        let rq = &int8.requant;
        // Subnormal, zero or negative scales would not match tract's fixed-point form.
        let channels_ok = int8.channel_mults.as_ref().is_none_or(|m| m.len() == geo.cout);
        let scale_ok = channels_ok
            && (0..geo.cout).map(|c| int8.mult(c)).all(|m| m.is_normal() && m > 0.0 && m < MAX_SCALE);
        if weights.len() != geo.cout * geo.taps() || bias.len() != geo.cout || !scale_ok {
            return None;
        }
        let x_max = f64::from((x_range.1 - rq.x_zero).abs().max((x_range.0 - rq.x_zero).abs()));
        let shifted: Vec<i32> = weights.iter().map(|&w| w - rq.w_zero).collect();
        for (oc, row) in shifted.chunks_exact(geo.taps()).enumerate() {
            let bound =
                row.iter().map(|&w| f64::from(w.abs())).sum::<f64>() * x_max + f64::from(bias[oc]).abs();
            if bound >= F32_EXACT {
                return None;
            }
        }
        let int = Packed::new(geo, &shifted, bias, rq.x_zero, x_range).and_then(IntConv::new);
        let shifted: Vec<f32> = shifted.iter().map(|&w| w as f32).collect();
        let bias: Vec<f32> = bias.iter().map(|&b| b as f32).collect();
        Some(DirectConv {
            geo,
            packed: pack(&geo, &shifted),
            bias: pad_bias(&geo, &bias),
            relu: false,
            pool: false,
            int8: Some(int8),
            x_range,
            int,
            winograd: None,
            quantize_input: None,
            lookup: None,
        })
    }

    /// Fuses a following 2x2/s2 max pool ([`DirectConv::pool`]). An fp32 3x3 convolution
    /// then runs as Winograd where the CPU can ([`winograd`]), its kernels transformed here.
    pub(crate) fn fuse_pool(&mut self) {
        self.pool = true;
        if self.int8.is_none() && winograd::available() {
            self.winograd = winograd::transform_weights(&self.geo, &self.packed);
        }
    }

    /// Element type of the output: f32, the requantised type, or the lookup's.
    fn output_datum_type(&self) -> DatumType {
        match (&self.int8, &self.lookup) {
            (_, Some((_, dt))) => *dt,
            (Some(q), None) => q.output,
            (None, None) => DatumType::F32,
        }
    }

    /// Output shape for a batch of `n`.
    fn output_shape(&self, n: usize) -> [usize; 4] {
        if self.pool {
            [n, self.geo.cout, self.geo.oh / 2, self.geo.ow / 2]
        } else {
            [n, self.geo.cout, self.geo.oh, self.geo.ow]
        }
    }

    /// Convolves a batch of images already converted to f32 (int8: minus the zero point)
    /// by `load`, into `out` (`output_shape(n)`: bias added, Relu applied and max-pooled if
    /// fused), with its buffers in `f32_input`: pooled as the kernel stores where the CPU's
    /// kernel can, otherwise through one image's full-size buffer.
    fn run(&self, n: usize, load: impl Fn(usize, &mut [f32]), out: &mut [f32], f32_input: F32Input<'_>) {
        let g = &self.geo;
        let F32Input { padded, plane, image, transformed } = f32_input;
        let (ph, pw) = (g.padded_h(), g.padded_w());
        let padded = sized(padded, g.cin * ph * pw, 0.0);
        let plane = sized(plane, g.h * g.w, 0.0);
        let image_out = self.output_shape(1).iter().product();
        if image_out == 0 {
            return;
        }
        let winograd = self.winograd.as_deref();
        let transformed = sized(transformed, winograd.map_or(0, |_| winograd::transformed_len(g)), 0.0);
        let pool_after = self.pool && !pools_in_kernel();
        let image = sized(image, if pool_after { g.cout * g.oh * g.ow } else { 0 }, 0.0);
        for (img, dst) in out.chunks_exact_mut(image_out).take(n).enumerate() {
            for ci in 0..g.cin {
                load(img * g.cin + ci, plane);
                let padded_plane = &mut padded[ci * ph * pw..][..ph * pw];
                for (y, row) in plane.chunks_exact(g.w).enumerate() {
                    copy_row(&mut padded_plane[(g.pad_top + y) * pw + g.pad_left..][..g.w], row);
                }
            }
            if let Some(u) = winograd {
                winograd::convolve_pooled(g, padded, u, &self.bias, self.relu, transformed, dst);
            } else if pool_after {
                convolve(g, padded, &self.packed, &self.bias, self.relu, false, image);
                cascade_kernels::pool::pool_into(image, &[1, g.cout, g.oh, g.ow], dst);
            } else {
                convolve(g, padded, &self.packed, &self.bias, self.relu, self.pool, dst);
            }
        }
    }
}

/// The f32 loop's buffers, borrowed from a [`Scratch`] apart from its accumulators.
struct F32Input<'a> {
    padded: &'a mut Vec<f32>,
    plane: &'a mut Vec<f32>,
    image: &'a mut Vec<f32>,
    transformed: &'a mut Vec<f32>,
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

// tract compares ops to merge identical nodes; equality is bitwise so it is an equivalence.
impl PartialEq for DirectConv {
    fn eq(&self, other: &DirectConv) -> bool {
        self.geo == other.geo
            && same_bits(&self.packed, &other.packed)
            && same_bits(&self.bias, &other.bias)
            && self.relu == other.relu
            && self.pool == other.pool
            && self.quantize_input.map(|(s, z)| (s.to_bits(), z))
                == other.quantize_input.map(|(s, z)| (s.to_bits(), z))
            && self.int8 == other.int8
            && self.x_range == other.x_range
            && self.int == other.int
            && self.lookup == other.lookup
    }
}
impl Eq for DirectConv {}

impl Op for DirectConv {
    fn name(&self) -> StaticName {
        "CascadeDirectConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let g = &self.geo;
        Ok(vec![format!(
            "{}->{} {}x{} on {}x{}, pad {},{}; relu: {}; pool: {}; int8: {}",
            g.cin,
            g.cout,
            g.kh,
            g.kw,
            g.h,
            g.w,
            g.pad_top,
            g.pad_left,
            self.relu,
            self.pool,
            self.int8.is_some()
        )])
    }

    op_as_typed_op!();
}

/// A `DirectConv` node's state in a tract run: its buffers, nothing that changes an answer.
#[derive(Debug, Clone, Default)]
struct ConvState(Scratch);

impl OpState for ConvState {
    fn eval(&mut self, _ctx: &EvalContext, op: &dyn Op, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let Some(op) = op.downcast_ref::<DirectConv>() else { bail!("ConvState runs only a DirectConv") };
        op.eval_with(inputs, &mut self.0)
    }

    fn reset_lanes(&mut self, _lanes: &[LaneId]) -> TractResult<()> {
        // Scratch only: no run's answer depends on an earlier one.
        Ok(())
    }
}

impl EvalOp for DirectConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        self.eval_with(inputs, &mut Scratch::default())
    }

    fn state(&self, _ctx: &EvalContext) -> TractResult<Option<Box<dyn OpState>>> {
        Ok(Some(Box::new(ConvState::default())))
    }
}

impl DirectConv {
    /// Evaluates the op on `inputs` with buffers kept in `scratch`.
    fn eval_with(&self, inputs: TVec<TValue>, scratch: &mut Scratch) -> TractResult<TVec<TValue>> {
        let Some(input) = inputs.first() else { bail!("DirectConv needs one input") };
        let g = &self.geo;
        let shape = input.shape();
        if shape.len() != 4 || shape[1..] != [g.cin, g.h, g.w] {
            bail!("DirectConv planned for [N,{},{},{}], got {shape:?}", g.cin, g.h, g.w);
        }
        let n = shape[0];
        let out_shape = self.output_shape(n);
        let plane = g.h * g.w;
        let out_len = out_shape.iter().product();
        let Scratch { acc, padded, plane: unpadded, image, transformed, int: int_scratch } = scratch;
        let f32_input = F32Input { padded, plane: unpadded, image, transformed };
        let Some(q @ Int8Output { requant: rq, output, .. }) = &self.int8 else {
            let x = input.try_as_plain_ram()?;
            let x = x.as_slice::<f32>()?;
            let load = |p: usize, dst: &mut [f32]| dst.copy_from_slice(&x[p * plane..][..plane]);
            let mut data = vec![0f32; out_len];
            self.run(n, load, &mut data, f32_input);
            let out = Tensor::from(ArrayD::from_shape_vec(IxDyn(&out_shape), data)?);
            return Ok(tvec!(out.into_tvalue()));
        };
        let x_zero = rq.x_zero;
        let x = input.try_as_plain_ram()?;
        let range = self.x_range;
        let dt = input.datum_type().unquantized();
        if dt == DatumType::F32 && self.quantize_input.is_none() {
            bail!("DirectConv int8 got an f32 input without quantisation parameters")
        }
        let (scale, zero) = self.quantize_input.unwrap_or_default();
        let acc = sized(acc, out_len, 0.0);
        if let Some(int) = &self.int {
            // On integer dot-product instructions, pooled as it is stored: the input as
            // unsigned bytes.
            match dt {
                DatumType::F32 => {
                    // Adding 2^23 leaves an integer in 0..=255 in the low mantissa bits: no
                    // saturating conversion, so the loop stays vectorised.
                    let (x, shift) = (x.as_slice::<f32>()?, int.shift() as f32 + 8_388_608.0);
                    let load = |p: usize, dst: &mut [u8]| {
                        let byte = |q: f32| (q + shift).to_bits() as u8;
                        quantize_all(&x[p * plane..][..plane], scale, zero, range, dst, byte);
                    };
                    int.run(n, self.pool, load, acc, int_scratch);
                }
                DatumType::U8 => {
                    let x = x.as_slice::<u8>()?;
                    let load = |p: usize, dst: &mut [u8]| dst.copy_from_slice(&x[p * plane..][..plane]);
                    int.run(n, self.pool, load, acc, int_scratch);
                }
                DatumType::I8 => {
                    let x = x.as_slice::<i8>()?;
                    let load = |p: usize, dst: &mut [u8]| {
                        for (d, &v) in dst.iter_mut().zip(&x[p * plane..][..plane]) {
                            *d = (v as u8) ^ 0x80;
                        }
                    };
                    int.run(n, self.pool, load, acc, int_scratch);
                }
                other => bail!("DirectConv does not implement int8 input {other:?}"),
            }
        } else {
            // On the f32 loop: the input as f32 integers minus the zero point.
            match dt {
                DatumType::F32 => {
                    let x = x.as_slice::<f32>()?;
                    let load = |p: usize, dst: &mut [f32]| {
                        quantize_all(&x[p * plane..][..plane], scale, zero, range, dst, |q| {
                            q - x_zero as f32
                        });
                    };
                    self.run(n, load, acc, f32_input);
                }
                DatumType::U8 => {
                    let x = x.as_slice::<u8>()?;
                    let load = |p: usize, dst: &mut [f32]| {
                        for (d, &v) in dst.iter_mut().zip(&x[p * plane..][..plane]) {
                            *d = (i32::from(v) - x_zero) as f32;
                        }
                    };
                    self.run(n, load, acc, f32_input);
                }
                DatumType::I8 => {
                    let x = x.as_slice::<i8>()?;
                    let load = |p: usize, dst: &mut [f32]| {
                        for (d, &v) in dst.iter_mut().zip(&x[p * plane..][..plane]) {
                            *d = (i32::from(v) - x_zero) as f32;
                        }
                    };
                    self.run(n, load, acc, f32_input);
                }
                other => bail!("DirectConv does not implement int8 input {other:?}"),
            }
        }
        // One output plane per (image, channel), each with its channel's multiplier.
        let plane_out = out_shape[2] * out_shape[3];
        fn requantize_planes<T: Quantized>(
            acc: &[f32],
            plane: usize,
            q: &Int8Output,
            cout: usize,
            out: &mut [T],
        ) {
            if q.channel_mults.is_none() || plane == 0 {
                return requantize_all(acc, q.requant.mult, q.requant.y_zero, out);
            }
            for (p, (a, o)) in acc.chunks_exact(plane).zip(out.chunks_exact_mut(plane)).enumerate() {
                requantize_all(a, q.mult(p % cout), q.requant.y_zero, o);
            }
        }
        let mut out = match output.unquantized() {
            DatumType::U8 => {
                let mut data = vec![0u8; acc.len()];
                requantize_planes(acc, plane_out, q, g.cout, &mut data);
                if let Some((table, _)) = &self.lookup {
                    for v in &mut data {
                        *v = table[usize::from(*v)];
                    }
                }
                Tensor::from(ArrayD::from_shape_vec(IxDyn(&out_shape), data)?)
            }
            DatumType::I8 => {
                let mut data = vec![0i8; acc.len()];
                requantize_planes(acc, plane_out, q, g.cout, &mut data);
                Tensor::from(ArrayD::from_shape_vec(IxDyn(&out_shape), data)?)
            }
            other => bail!("DirectConv does not implement int8 output {other:?}"),
        };
        let dt = self.output_datum_type();
        if out.datum_type() != dt {
            // SAFETY: `dt` is a quantised view of the element type the data was built with
            // (QU8 over u8, QI8 over i8).
            unsafe { out.set_datum_type(dt) };
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for DirectConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let Some(input) = inputs.first() else { bail!("DirectConv needs one input") };
        let Some(shape) = input.shape.as_concrete() else { bail!("DirectConv needs a concrete input shape") };
        if shape.len() != 4 {
            bail!("DirectConv needs an NCHW input, got shape {shape:?}");
        }
        let dt = self.output_datum_type();
        Ok(tvec!(TypedFact::dt_shape(dt, &self.output_shape(shape[0])[..])))
    }

    as_op!();
}
