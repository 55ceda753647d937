//! The int8 edges of the direct convolution: quantising its f32 input as tract's
//! QuantizeLinear does, and requantising its integer sums as tract's QLinearConv does, with
//! the widest vectors the CPU has.

/// `acc * scale` rounded half to even, which is what tract's fixed-point `Scaler` computes
/// (`Scaler::new(scale, RoundingPolicy::Even) * acc`), for `|acc| < 2^24` and a positive
/// finite `scale`: both have 24 significant bits, so their product is exact in f64 and
/// rounding it is the only rounding, as in the fixed-point form. The unit tests check it
/// against `Scaler`. Unlike the fixed-point form it vectorises: adding 1.5 * 2^52 rounds
/// any |x| < 2^51 to the nearest integer, ties to even (the default floating-point
/// rounding), and leaves that integer in the low bits of the sum, two's complement, for
/// |x| < 2^31 — no library call, no saturating float-to-int conversion.
#[inline(always)]
pub fn requantize(acc: f32, scale: f32) -> i32 {
    const ROUND: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52
    let x = f64::from(acc) * f64::from(scale);
    (x + ROUND).to_bits() as i32
}

/// Largest requantisation scale: keeps |acc * scale| (|acc| < 2^24) below 2^30, so
/// [`requantize`]'s result and the output zero point added to it fit an i32.
pub const MAX_SCALE: f32 = 64.0;

/// What tract's QuantizeLinear (to u8 or i8, whose range is `range`) computes,
/// `clamp(round_ties_even(x * scale) + zero, lo, hi)`, as an integer-valued f32 passed
/// through `map` (which subtracts the convolution's input zero point for the f32 loop, or
/// makes the integer an unsigned byte for [`crate::intconv`]). Clamping in f32 before
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

/// QuantizeLinear of `src` into `dst` (`quantize_loop`), with the widest vectors this CPU has.
pub fn quantize_all<T>(
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
pub trait Quantized: Copy {
    /// The type's smallest value.
    const MIN: i32;
    /// The type's largest value.
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

/// `out[i]` = `acc[i] * scale` rounded ([`requantize`]), plus `y_zero`, clamped to `T`.
#[inline(always)]
fn requantize_loop<T: Quantized>(acc: &[f32], scale: f32, y_zero: i32, out: &mut [T]) {
    for (o, &a) in out.iter_mut().zip(acc) {
        *o = T::from_clamped((requantize(a, scale) + y_zero).clamp(T::MIN, T::MAX));
    }
}

/// Requantises every accumulator into `out`, with the widest vectors this CPU has (the
/// baseline build has only two f64 lanes).
pub fn requantize_all<T: Quantized>(acc: &[f32], scale: f32, y_zero: i32, out: &mut [T]) {
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
