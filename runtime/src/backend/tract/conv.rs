//! An im2col-free 2-D convolution, plugged into tract's typed graph as an op of its own.
//!
//! tract 0.23 lowers every convolution to im2col + matrix multiply. On the small CNNs an edge
//! node runs (few input channels, 3x3 kernels, 28x28 planes) building the im2col matrix is a
//! large share of an image's time, and for int8 tract builds it eagerly in u8, which made
//! the int8 edge model slower than its fp32 twin. This op computes the convolution directly
//! from a zero-padded copy of the input: for each output row and each block of output
//! channels it keeps a tile of accumulators in registers and adds `weight * input row` once
//! per kernel tap: AVX-512 (16 accumulators: 16 columns x 2 blocks of 8 channels) or
//! AVX2+FMA kernels chosen at run time, and a plain-Rust kernel everywhere else (baseline
//! x86-64, aarch64). Weights are packed at load in the order the loop reads them.
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
//! int8 runs on the CPU's integer dot-product instructions where it has them
//! ([`super::intconv`]: AVX-512 VNNI, AVX-VNNI), and otherwise on the same fp32 loop,
//! exactly: the input and weights are shifted by their zero points into small integers, whose products and sums are integers that f32 represents
//! exactly while they stay below 2^24 in magnitude. The rewrite checks that bound per output
//! channel at load (sum of |weight| times the largest |input|, plus |bias|) and leaves the
//! convolution to tract if it could be exceeded. The integer accumulator is then requantised
//! as tract does it: multiplied by the combined scale ([`Requant::mult`]) with tract's
//! fixed-point `Scaler` (round half to even), offset by the output zero point, clamped.

use tract_onnx::tract_core::internal::{
    DatumType, EvalContext, EvalOp, IntoTValue, Op, StaticName, TValue, TVec, Tensor, TractResult, TypedFact,
    TypedOp, as_op, bail, op_as_typed_op, op_out_of_plan, tvec,
};
use tract_onnx::tract_core::ndarray::{ArrayD, IxDyn};

use super::intconv::{IntConv, Packed};
use crate::backend::quant::Requant;

/// Output columns computed at once by the wide kernels (one AVX-512 register, two AVX ones).
const TILE: usize = 16;
/// Output channels per packed weight block: the most any kernel uses; the others split it.
const BLOCK: usize = 8;
/// Largest magnitude up to which every integer is exact in f32.
const F32_EXACT: f64 = 16_777_216.0;

/// Shape of one convolution, fixed at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConvGeometry {
    /// Input channels.
    pub(crate) cin: usize,
    /// Output channels.
    pub(crate) cout: usize,
    /// Input height and width.
    pub(crate) h: usize,
    /// Input width.
    pub(crate) w: usize,
    /// Kernel height.
    pub(crate) kh: usize,
    /// Kernel width.
    pub(crate) kw: usize,
    /// Zero rows above the input.
    pub(crate) pad_top: usize,
    /// Zero columns left of the input.
    pub(crate) pad_left: usize,
    /// Output height.
    pub(crate) oh: usize,
    /// Output width.
    pub(crate) ow: usize,
}

impl ConvGeometry {
    pub(crate) fn taps(&self) -> usize {
        self.cin * self.kh * self.kw
    }

    pub(crate) fn tiles(&self) -> usize {
        self.ow.div_ceil(TILE)
    }

    /// Rows of the padded input copy.
    pub(crate) fn padded_h(&self) -> usize {
        self.oh + self.kh - 1
    }

    /// Row stride of the padded input copy: wide enough for whole tiles at every tap.
    pub(crate) fn padded_w(&self) -> usize {
        (self.tiles() * TILE + self.kw - 1).max(self.pad_left + self.w)
    }

    fn blocks(&self) -> usize {
        self.cout.div_ceil(BLOCK)
    }
}

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
    /// Weights in blocks of [`BLOCK`] output channels: `[block][ci][ky][kx][BLOCK]`, the last
    /// block padded with zeros. For int8, weights minus their zero point.
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
    /// int8 form only, on a CPU with integer dot-product instructions and weights that fit
    /// an i8: the same convolution on those instructions ([`super::intconv`]).
    int: Option<IntConv>,
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
            quantize_input: None,
            lookup: None,
        })
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
    /// by `load`, into `out` (`[n][cout][oh][ow]`, bias added, Relu applied if fused).
    fn run(&self, n: usize, load: impl Fn(usize, &mut [f32]), out: &mut [f32]) {
        let g = &self.geo;
        let (ph, pw) = (g.padded_h(), g.padded_w());
        let mut padded = vec![0f32; g.cin * ph * pw];
        let image_out = g.cout * g.oh * g.ow;
        let mut plane = vec![0f32; g.h * g.w];
        for (img, dst) in out.chunks_exact_mut(image_out).take(n).enumerate() {
            for ci in 0..g.cin {
                load(img * g.cin + ci, &mut plane);
                let padded_plane = &mut padded[ci * ph * pw..][..ph * pw];
                for (y, row) in plane.chunks_exact(g.w).enumerate() {
                    padded_plane[(g.pad_top + y) * pw + g.pad_left..][..g.w].copy_from_slice(row);
                }
            }
            convolve(g, &padded, &self.packed, &self.bias, self.relu, dst);
        }
    }
}

/// `acc * scale` rounded half to even, which is what tract's fixed-point `Scaler` computes
/// (`Scaler::new(scale, RoundingPolicy::Even) * acc`), for `|acc| < 2^24` and a positive
/// finite `scale`: both have 24 significant bits, so their product is exact in f64 and
/// rounding it is the only rounding, as in the fixed-point form. The unit tests check it
/// against `Scaler`. Unlike the fixed-point form it vectorises: adding 1.5 * 2^52 rounds
/// any |x| < 2^51 to the nearest integer, ties to even (the default floating-point
/// rounding), and leaves that integer in the low bits of the sum, two's complement, for
/// |x| < 2^31 — no library call, no saturating float-to-int conversion.
#[inline(always)]
fn requantize(acc: f32, scale: f32) -> i32 {
    const ROUND: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52
    let x = f64::from(acc) * f64::from(scale);
    (x + ROUND).to_bits() as i32
}

/// Largest requantisation scale: keeps |acc * scale| (|acc| < 2^24) below 2^30, so
/// [`requantize`]'s result and the output zero point added to it fit an i32.
const MAX_SCALE: f32 = 64.0;

/// What tract's QuantizeLinear (to u8 or i8, whose range is `range`) computes,
/// `clamp(round_ties_even(x * scale) + zero, lo, hi)`, as an integer-valued f32 passed
/// through `map` (which subtracts the convolution's input zero point for the f32 loop, or
/// makes the integer an unsigned byte for [`super::intconv`]). Clamping in f32 before
/// converting gives the same result for every finite and NaN input (NaN counts as 0, as
/// tract's saturating cast makes it) and keeps the loop vectorised.
#[inline(always)]
fn quantize_loop<T>(
    src: &[f32],
    scale: f32,
    zero: i32,
    range: (i32, i32),
    dst: &mut [T],
    map: impl Fn(f32) -> T,
) {
    let (zero, lo, hi) = (zero as f32, range.0 as f32, range.1 as f32);
    for (d, &x) in dst.iter_mut().zip(src) {
        let v = x * scale;
        let r = if v.is_nan() { 0.0 } else { v.round_ties_even() };
        *d = map((r + zero).clamp(lo, hi));
    }
}

fn quantize_all<T>(
    src: &[f32],
    scale: f32,
    zero: i32,
    range: (i32, i32),
    dst: &mut [T],
    map: impl Fn(f32) -> T,
) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512<T>(
            src: &[f32],
            scale: f32,
            zero: i32,
            range: (i32, i32),
            dst: &mut [T],
            map: impl Fn(f32) -> T,
        ) {
            quantize_loop(src, scale, zero, range, dst, map);
        }
        #[target_feature(enable = "avx2")]
        fn avx2<T>(
            src: &[f32],
            scale: f32,
            zero: i32,
            range: (i32, i32),
            dst: &mut [T],
            map: impl Fn(f32) -> T,
        ) {
            quantize_loop(src, scale, zero, range, dst, map);
        }
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has the feature the function is compiled for.
            return unsafe { avx512(src, scale, zero, range, dst, map) };
        }
        if is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            return unsafe { avx2(src, scale, zero, range, dst, map) };
        }
    }
    quantize_loop(src, scale, zero, range, dst, map);
}

/// An int8 output element type.
trait Quantized: Copy {
    const MIN: i32;
    const MAX: i32;
    /// `v`, already clamped to `MIN..=MAX`.
    fn from_clamped(v: i32) -> Self;
}

impl Quantized for u8 {
    const MIN: i32 = 0;
    const MAX: i32 = 255;
    #[inline(always)]
    fn from_clamped(v: i32) -> u8 {
        v as u8
    }
}

impl Quantized for i8 {
    const MIN: i32 = -128;
    const MAX: i32 = 127;
    #[inline(always)]
    fn from_clamped(v: i32) -> i8 {
        v as i8
    }
}

#[inline(always)]
fn requantize_loop<T: Quantized>(acc: &[f32], scale: f32, y_zero: i32, out: &mut [T]) {
    for (o, &a) in out.iter_mut().zip(acc) {
        *o = T::from_clamped((requantize(a, scale) + y_zero).clamp(T::MIN, T::MAX));
    }
}

/// Requantises every accumulator into `out`, with the widest vectors this CPU has (the
/// baseline build has only two f64 lanes).
fn requantize_all<T: Quantized>(acc: &[f32], scale: f32, y_zero: i32, out: &mut [T]) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512<T: Quantized>(acc: &[f32], scale: f32, y_zero: i32, out: &mut [T]) {
            requantize_loop(acc, scale, y_zero, out);
        }
        #[target_feature(enable = "avx2")]
        fn avx2<T: Quantized>(acc: &[f32], scale: f32, y_zero: i32, out: &mut [T]) {
            requantize_loop(acc, scale, y_zero, out);
        }
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has the feature the function is compiled for.
            return unsafe { avx512(acc, scale, y_zero, out) };
        }
        if is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            return unsafe { avx2(acc, scale, y_zero, out) };
        }
    }
    requantize_loop(acc, scale, y_zero, out);
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

fn pack(g: &ConvGeometry, weights: &[f32]) -> Vec<f32> {
    let taps = g.taps();
    let mut packed = vec![0f32; g.blocks() * taps * BLOCK];
    for (oc, row) in weights.chunks_exact(taps).enumerate() {
        let block = &mut packed[oc / BLOCK * taps * BLOCK..][..taps * BLOCK];
        for (tap, &w) in row.iter().enumerate() {
            block[tap * BLOCK + oc % BLOCK] = w;
        }
    }
    packed
}

fn pad_bias(g: &ConvGeometry, bias: &[f32]) -> Vec<f32> {
    let mut padded = vec![0f32; g.blocks() * BLOCK];
    padded[..bias.len()].copy_from_slice(bias);
    padded
}

/// Which vector path each of this file's kernels takes on this CPU, in the order of the
/// dispatches below (for benchmark reports; [`crate::backend::cpu::machine_report`]).
pub(crate) fn kernel_paths() -> Vec<(&'static str, &'static str)> {
    #[cfg(target_arch = "x86_64")]
    {
        let (avx512, avx2, fma) = (
            is_x86_feature_detected!("avx512f"),
            is_x86_feature_detected!("avx2"),
            is_x86_feature_detected!("fma"),
        );
        let wide = if avx512 {
            "avx512f"
        } else if avx2 {
            "avx2"
        } else {
            "portable"
        };
        let conv = if avx512 && fma {
            "avx512f+fma"
        } else if avx2 && fma {
            "avx2+fma"
        } else {
            "portable"
        };
        vec![
            ("direct_conv", conv),
            ("int8_conv", super::intconv::kernel_path()),
            ("quantize", wide),
            ("requantize", wide),
        ]
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        vec![
            ("direct_conv", "portable"),
            ("int8_conv", super::intconv::kernel_path()),
            ("quantize", "portable"),
            ("requantize", "portable"),
        ]
    }
}

/// Picks the widest kernel this CPU runs.
fn convolve(g: &ConvGeometry, padded: &[f32], packed: &[f32], bias: &[f32], relu: bool, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { convolve_avx512(g, padded, packed, bias, relu, out) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: as above.
            return unsafe { convolve_avx2(g, padded, packed, bias, relu, out) };
        }
    }
    convolve_portable(g, padded, packed, bias, relu, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
fn convolve_avx512(
    g: &ConvGeometry,
    padded: &[f32],
    packed: &[f32],
    bias: &[f32],
    relu: bool,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    // 16 columns x two blocks of 8 channels: sixteen zmm accumulators, enough independent
    // FMAs in flight for two FMA pipes; per tap one row load and sixteen broadcast weights
    // feed sixteen FMAs. An odd last block runs alone, with eight.
    let taps = g.taps();
    let (pw, plane_in) = (g.padded_w(), g.padded_h() * g.padded_w());
    let blocks = g.blocks();
    #[inline(always)]
    fn store(
        g: &ConvGeometry,
        acc: [__m512; BLOCK],
        oc0: usize,
        y: usize,
        x0: usize,
        relu: bool,
        out: &mut [f32],
    ) {
        let plane_out = g.oh * g.ow;
        let cols = TILE.min(g.ow - x0);
        let mask: __mmask16 = if cols == TILE { !0 } else { (1u16 << cols) - 1 };
        for (ob, a) in acc.into_iter().enumerate() {
            let oc = oc0 + ob;
            if oc >= g.cout {
                break;
            }
            let a = if relu {
                // SAFETY: both intrinsics need AVX-512F, which the caller is compiled with.
                unsafe { _mm512_max_ps(a, _mm512_setzero_ps()) }
            } else {
                a
            };
            let dst = &mut out[oc * plane_out + y * g.ow + x0..][..cols];
            // SAFETY: the mask writes exactly `cols` floats, the length of `dst`.
            unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr(), mask, a) };
        }
    }
    for first in (0..blocks - blocks % 2).step_by(2) {
        let second = first + 1;
        let weights_a = &packed[first * taps * BLOCK..][..taps * BLOCK];
        let weights_b = &packed[second * taps * BLOCK..][..taps * BLOCK];
        for y in 0..g.oh {
            for tile in 0..g.tiles() {
                let x0 = tile * TILE;
                let mut acc_a = [_mm512_setzero_ps(); BLOCK];
                let mut acc_b = [_mm512_setzero_ps(); BLOCK];
                for ob in 0..BLOCK {
                    acc_a[ob] = _mm512_set1_ps(bias[first * BLOCK + ob]);
                    acc_b[ob] = _mm512_set1_ps(bias[second * BLOCK + ob]);
                }
                for ci in 0..g.cin {
                    for ky in 0..g.kh {
                        // Whole-row slices checked once, so the tap loop needs no checks.
                        let row = &padded[ci * plane_in + (y + ky) * pw + x0..][..TILE + g.kw - 1];
                        let tap0 = (ci * g.kh + ky) * g.kw;
                        let row_a = &weights_a[tap0 * BLOCK..][..g.kw * BLOCK];
                        let row_b = &weights_b[tap0 * BLOCK..][..g.kw * BLOCK];
                        let taps_a = row_a.chunks_exact(BLOCK).zip(row_b.chunks_exact(BLOCK));
                        for (input, (w_a, w_b)) in row.windows(TILE).zip(taps_a) {
                            // SAFETY: `input` holds 16 floats.
                            let v = unsafe { _mm512_loadu_ps(input.as_ptr()) };
                            for ob in 0..BLOCK {
                                acc_a[ob] = _mm512_fmadd_ps(_mm512_set1_ps(w_a[ob]), v, acc_a[ob]);
                                acc_b[ob] = _mm512_fmadd_ps(_mm512_set1_ps(w_b[ob]), v, acc_b[ob]);
                            }
                        }
                    }
                }
                store(g, acc_a, first * BLOCK, y, x0, relu, out);
                store(g, acc_b, second * BLOCK, y, x0, relu, out);
            }
        }
    }
    if blocks % 2 == 1 {
        let last = blocks - 1;
        let weights = &packed[last * taps * BLOCK..][..taps * BLOCK];
        for y in 0..g.oh {
            for tile in 0..g.tiles() {
                let x0 = tile * TILE;
                let mut acc = [_mm512_setzero_ps(); BLOCK];
                for (ob, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_set1_ps(bias[last * BLOCK + ob]);
                }
                for ci in 0..g.cin {
                    for ky in 0..g.kh {
                        let row = &padded[ci * plane_in + (y + ky) * pw + x0..][..TILE + g.kw - 1];
                        let tap0 = (ci * g.kh + ky) * g.kw;
                        let taps = weights[tap0 * BLOCK..][..g.kw * BLOCK].chunks_exact(BLOCK);
                        for (input, w) in row.windows(TILE).zip(taps) {
                            // SAFETY: `input` holds 16 floats.
                            let v = unsafe { _mm512_loadu_ps(input.as_ptr()) };
                            for ob in 0..BLOCK {
                                acc[ob] = _mm512_fmadd_ps(_mm512_set1_ps(w[ob]), v, acc[ob]);
                            }
                        }
                    }
                }
                store(g, acc, last * BLOCK, y, x0, relu, out);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn convolve_avx2(
    g: &ConvGeometry,
    padded: &[f32],
    packed: &[f32],
    bias: &[f32],
    relu: bool,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    // 4 channels x 16 columns: eight ymm accumulators of the sixteen registers.
    const OB: usize = 4;
    let taps = g.taps();
    let (pw, plane_in) = (g.padded_w(), g.padded_h() * g.padded_w());
    let plane_out = g.oh * g.ow;
    for block in 0..g.blocks() {
        let weights = &packed[block * taps * BLOCK..][..taps * BLOCK];
        for sub in 0..BLOCK / OB {
            let oc0 = block * BLOCK + sub * OB;
            if oc0 >= g.cout {
                break;
            }
            for y in 0..g.oh {
                for tile in 0..g.tiles() {
                    let x0 = tile * TILE;
                    let mut acc = [[_mm256_setzero_ps(); 2]; OB];
                    for (ob, a) in acc.iter_mut().enumerate() {
                        *a = [_mm256_set1_ps(bias[oc0 + ob]); 2];
                    }
                    for ci in 0..g.cin {
                        for ky in 0..g.kh {
                            let row = &padded[ci * plane_in + (y + ky) * pw + x0..];
                            let tap0 = (ci * g.kh + ky) * g.kw;
                            for kx in 0..g.kw {
                                let input = &row[kx..][..TILE];
                                let w = &weights[(tap0 + kx) * BLOCK + sub * OB..][..OB];
                                // SAFETY: `input` holds 16 floats.
                                let (lo, hi) = unsafe {
                                    (_mm256_loadu_ps(input.as_ptr()), _mm256_loadu_ps(input[8..].as_ptr()))
                                };
                                for (a, &wv) in acc.iter_mut().zip(w) {
                                    let wv = _mm256_set1_ps(wv);
                                    a[0] = _mm256_fmadd_ps(wv, lo, a[0]);
                                    a[1] = _mm256_fmadd_ps(wv, hi, a[1]);
                                }
                            }
                        }
                    }
                    let cols = TILE.min(g.ow - x0);
                    for (ob, a) in acc.iter().enumerate() {
                        let oc = oc0 + ob;
                        if oc >= g.cout {
                            break;
                        }
                        let mut tile_out = [0f32; TILE];
                        for (half, &v) in a.iter().enumerate() {
                            let v = if relu { _mm256_max_ps(v, _mm256_setzero_ps()) } else { v };
                            // SAFETY: each half of `tile_out` holds 8 floats.
                            unsafe { _mm256_storeu_ps(tile_out[half * 8..].as_mut_ptr(), v) };
                        }
                        out[oc * plane_out + y * g.ow + x0..][..cols].copy_from_slice(&tile_out[..cols]);
                    }
                }
            }
        }
    }
}

/// Everywhere else (baseline x86-64, aarch64): plain loops, one output channel at a time so
/// the compiler vectorises along the columns.
fn convolve_portable(
    g: &ConvGeometry,
    padded: &[f32],
    packed: &[f32],
    bias: &[f32],
    relu: bool,
    out: &mut [f32],
) {
    convolve_with::<1>(g, padded, packed, bias, relu, out);
}

/// The convolution of one padded image, `OB` output channels at a time (`OB` divides
/// [`BLOCK`]).
#[inline(always)]
fn convolve_with<const OB: usize>(
    g: &ConvGeometry,
    padded: &[f32],
    packed: &[f32],
    bias: &[f32],
    relu: bool,
    out: &mut [f32],
) {
    let taps = g.taps();
    let (pw, plane_in) = (g.padded_w(), g.padded_h() * g.padded_w());
    let plane_out = g.oh * g.ow;
    for block in 0..g.blocks() {
        let weights = &packed[block * taps * BLOCK..][..taps * BLOCK];
        for sub in 0..BLOCK / OB {
            let oc0 = block * BLOCK + sub * OB;
            if oc0 >= g.cout {
                break;
            }
            for y in 0..g.oh {
                for tile in 0..g.tiles() {
                    let x0 = tile * TILE;
                    let mut acc = [[0f32; TILE]; OB];
                    for (ob, a) in acc.iter_mut().enumerate() {
                        *a = [bias[oc0 + ob]; TILE];
                    }
                    for ci in 0..g.cin {
                        for ky in 0..g.kh {
                            let row = &padded[ci * plane_in + (y + ky) * pw + x0..];
                            let tap0 = (ci * g.kh + ky) * g.kw;
                            for kx in 0..g.kw {
                                // Exact-length views: one bounds check each, none in the loop.
                                let input = &row[kx..][..TILE];
                                let w = &weights[(tap0 + kx) * BLOCK + sub * OB..][..OB];
                                for (a, &wv) in acc.iter_mut().zip(w) {
                                    for (av, &iv) in a.iter_mut().zip(input) {
                                        *av += wv * iv;
                                    }
                                }
                            }
                        }
                    }
                    let cols = TILE.min(g.ow - x0);
                    for (ob, a) in acc.iter().enumerate() {
                        let oc = oc0 + ob;
                        if oc >= g.cout {
                            break;
                        }
                        let dst = &mut out[oc * plane_out + y * g.ow + x0..][..cols];
                        if relu {
                            for (d, &v) in dst.iter_mut().zip(a) {
                                *d = v.max(0.0);
                            }
                        } else {
                            dst.copy_from_slice(&a[..cols]);
                        }
                    }
                }
            }
        }
    }
}

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

impl EvalOp for DirectConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let Some(input) = inputs.first() else { bail!("DirectConv needs one input") };
        let g = &self.geo;
        let shape = input.shape();
        if shape.len() != 4 || shape[1..] != [g.cin, g.h, g.w] {
            bail!("DirectConv planned for [N,{},{},{}], got {shape:?}", g.cin, g.h, g.w);
        }
        let n = shape[0];
        let out_shape = self.output_shape(n);
        let conv_len = n * g.cout * g.oh * g.ow;
        let plane = g.h * g.w;
        let pooled = |acc: Vec<f32>| {
            if self.pool { super::pool::pool(&acc, &[n, g.cout, g.oh, g.ow]).0 } else { acc }
        };
        let Some(q @ Int8Output { requant: rq, output, .. }) = &self.int8 else {
            let x = input.try_as_plain_ram()?;
            let x = x.as_slice::<f32>()?;
            let mut acc = vec![0f32; conv_len];
            self.run(n, |p, dst| dst.copy_from_slice(&x[p * plane..][..plane]), &mut acc);
            let out = Tensor::from(ArrayD::from_shape_vec(IxDyn(&out_shape), pooled(acc))?);
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
        let acc = if let Some(int) = &self.int {
            // On integer dot-product instructions, pooled as it is stored: the input as
            // unsigned bytes.
            let mut acc = vec![0f32; out_shape.iter().product()];
            match dt {
                DatumType::F32 => {
                    // Adding 2^23 leaves an integer in 0..=255 in the low mantissa bits: no
                    // saturating conversion, so the loop stays vectorised.
                    let (x, shift) = (x.as_slice::<f32>()?, int.shift() as f32 + 8_388_608.0);
                    let load = |p: usize, dst: &mut [u8]| {
                        let byte = |q: f32| (q + shift).to_bits() as u8;
                        quantize_all(&x[p * plane..][..plane], scale, zero, range, dst, byte);
                    };
                    int.run(n, self.pool, load, &mut acc);
                }
                DatumType::U8 => {
                    let x = x.as_slice::<u8>()?;
                    int.run(n, self.pool, |p, dst| dst.copy_from_slice(&x[p * plane..][..plane]), &mut acc);
                }
                DatumType::I8 => {
                    let x = x.as_slice::<i8>()?;
                    let load = |p: usize, dst: &mut [u8]| {
                        for (d, &v) in dst.iter_mut().zip(&x[p * plane..][..plane]) {
                            *d = (v as u8) ^ 0x80;
                        }
                    };
                    int.run(n, self.pool, load, &mut acc);
                }
                other => bail!("DirectConv does not implement int8 input {other:?}"),
            }
            acc
        } else {
            // On the f32 loop: the input as f32 integers minus the zero point.
            let mut acc = vec![0f32; conv_len];
            match dt {
                DatumType::F32 => {
                    let x = x.as_slice::<f32>()?;
                    let load = |p: usize, dst: &mut [f32]| {
                        quantize_all(&x[p * plane..][..plane], scale, zero, range, dst, |q| {
                            q - x_zero as f32
                        });
                    };
                    self.run(n, load, &mut acc);
                }
                DatumType::U8 => {
                    let x = x.as_slice::<u8>()?;
                    let load = |p: usize, dst: &mut [f32]| {
                        for (d, &v) in dst.iter_mut().zip(&x[p * plane..][..plane]) {
                            *d = (i32::from(v) - x_zero) as f32;
                        }
                    };
                    self.run(n, load, &mut acc);
                }
                DatumType::I8 => {
                    let x = x.as_slice::<i8>()?;
                    let load = |p: usize, dst: &mut [f32]| {
                        for (d, &v) in dst.iter_mut().zip(&x[p * plane..][..plane]) {
                            *d = (i32::from(v) - x_zero) as f32;
                        }
                    };
                    self.run(n, load, &mut acc);
                }
                other => bail!("DirectConv does not implement int8 input {other:?}"),
            }
            pooled(acc)
        };
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
                requantize_planes(&acc, plane_out, q, g.cout, &mut data);
                if let Some((table, _)) = &self.lookup {
                    for v in &mut data {
                        *v = table[usize::from(*v)];
                    }
                }
                Tensor::from(ArrayD::from_shape_vec(IxDyn(&out_shape), data)?)
            }
            DatumType::I8 => {
                let mut data = vec![0i8; acc.len()];
                requantize_planes(&acc, plane_out, q, g.cout, &mut data);
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

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::tract_linalg::Scaler;
    use tract_onnx::tract_core::tract_linalg::mmm::RoundingPolicy;

    #[test]
    fn requantize_rounds_exactly_as_tracts_fixed_point_scaler() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        // The edge model's two scales, powers of two (no multiplier), then random ones.
        let mut scales = vec![0.00523031f32 * 0.003921569 / 0.01079464, 0.25, 1.0, 4.0];
        scales.extend((0..40).map(|_| f32::from_bits(0x3000_0000 + (next() % 0x1000_0000) as u32)));
        for scale in scales {
            let scaler = Scaler::new(scale, RoundingPolicy::Even);
            // Ties included: multiples of a power of two near 1/scale land on halves.
            let mut accs: Vec<i32> = vec![0, 1, -1, 16_777_215, -16_777_215];
            accs.extend((0..2000).map(|_| (next() % 33_554_431) as i32 - 16_777_215));
            accs.extend((-300..300).map(|i| i * (1 << 12)));
            for acc in accs {
                assert_eq!(requantize(acc as f32, scale), scaler * acc, "acc {acc} scale {scale:e}");
            }
        }
    }

    #[test]
    fn every_kernel_this_cpu_runs_matches_the_portable_one() {
        let geo = ConvGeometry {
            cin: 3,
            cout: 11,
            h: 9,
            w: 37,
            kh: 3,
            kw: 2,
            pad_top: 1,
            pad_left: 0,
            oh: 9,
            ow: 36,
        };
        let weights: Vec<f32> =
            (0..geo.cout * geo.taps()).map(|i| ((i * 37) % 17) as f32 / 8.0 - 1.0).collect();
        let bias: Vec<f32> = (0..geo.cout).map(|i| i as f32 / 4.0 - 1.0).collect();
        let conv = DirectConv::fp32(geo, &weights, &bias, true).unwrap();
        let mut padded = vec![0f32; geo.cin * geo.padded_h() * geo.padded_w()];
        for (i, v) in padded.iter_mut().enumerate() {
            *v = ((i * 13) % 29) as f32 / 16.0 - 0.9;
        }
        let size = geo.cout * geo.oh * geo.ow;
        let mut expected = vec![0f32; size];
        convolve_portable(&geo, &padded, &conv.packed, &conv.bias, true, &mut expected);
        let mut got = vec![0f32; size];
        convolve(&geo, &padded, &conv.packed, &conv.bias, true, &mut got);
        let close =
            |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-5 * x.abs().max(1.0));
        assert!(close(&expected, &got));
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            let mut avx2 = vec![0f32; size];
            // SAFETY: the CPU has the features.
            unsafe { convolve_avx2(&geo, &padded, &conv.packed, &conv.bias, true, &mut avx2) };
            assert!(close(&expected, &avx2));
        }
        assert!(expected.iter().any(|&v| v > 0.0) && expected.iter().all(|&v| v >= 0.0));
    }

    #[test]
    fn int8_refuses_weights_whose_sums_f32_cannot_hold_exactly() {
        let geo = ConvGeometry {
            cin: 600,
            cout: 1,
            h: 1,
            w: 1,
            kh: 1,
            kw: 1,
            pad_top: 0,
            pad_left: 0,
            oh: 1,
            ow: 1,
        };
        let requant = Requant { x_zero: 0, w_zero: 0, y_zero: 0, mult: 0.01, lo: 0, hi: 255 };
        let q = Int8Output { requant, output: DatumType::U8, channel_mults: None };
        // 600 * 128 * 255 > 2^24; 400 * 128 * 255 < 2^24.
        assert!(DirectConv::int8(geo, &[-128; 600], &[0], (0, 255), q.clone()).is_none());
        let geo = ConvGeometry { cin: 400, ..geo };
        assert!(DirectConv::int8(geo, &[-128; 400], &[0], (0, 255), q).is_some());
    }
}
