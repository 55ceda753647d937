//! The aarch64 kernel: the dot-product extension's `sdot` as [`super::Lanes`], and its entry
//! point.

use std::arch::aarch64::*;
use std::arch::asm;

use super::{IntScratch, Lanes, Packed, VECTOR};

/// `sdot`: the signed dot product of four byte pairs into each i32 lane. Written as
/// assembly: its intrinsic (`vdotq_s32`) is not stable Rust yet.
#[inline]
#[target_feature(enable = "neon,dotprod")]
pub(crate) fn sdot(acc: int32x4_t, input: int8x16_t, weights: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: reads and writes only the three registers; the CPU has the dot-product
    // extension (this function's target feature).
    unsafe {
        asm!(
            ".arch_extension dotprod",
            "sdot {acc:v}.4s, {input:v}.16b, {weights:v}.16b",
            acc = inout(vreg) acc,
            input = in(vreg) input,
            weights = in(vreg) weights,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}

/// Four 128-bit vectors.
#[derive(Clone, Copy)]
pub(super) struct Neon([int32x4_t; 4]);

impl Neon {
    /// The sixteen lanes.
    #[inline]
    #[target_feature(enable = "neon,dotprod")]
    fn lanes(self) -> [i32; 16] {
        let mut lanes = [0i32; 16];
        for (dst, v) in lanes.chunks_exact_mut(4).zip(self.0) {
            // SAFETY: `dst` holds 4 i32.
            unsafe { vst1q_s32(dst.as_mut_ptr(), v) };
        }
        lanes
    }
}

// Each method is compiled for the instructions; callers run on a CPU that has them.
impl Lanes for Neon {
    const SIGNED: bool = true;
    #[inline]
    #[target_feature(enable = "neon,dotprod")]
    unsafe fn splat(v: i32) -> Neon {
        Neon([vdupq_n_s32(v); 4])
    }
    #[inline]
    #[target_feature(enable = "neon,dotprod")]
    unsafe fn load(bytes: &[u8]) -> Neon {
        let bytes = &bytes[..VECTOR];
        // SAFETY: `bytes` holds the 64 bytes read, 16 per vector.
        unsafe {
            Neon([
                vld1q_s32(bytes.as_ptr().cast()),
                vld1q_s32(bytes[16..].as_ptr().cast()),
                vld1q_s32(bytes[32..].as_ptr().cast()),
                vld1q_s32(bytes[48..].as_ptr().cast()),
            ])
        }
    }
    #[inline]
    #[target_feature(enable = "neon,dotprod")]
    unsafe fn load_input(bytes: &[u8]) -> Neon {
        // SAFETY: same contract.
        let v = unsafe { Neon::load(bytes) };
        let flip = vdupq_n_s32(0x8080_8080_u32 as i32);
        Neon(v.0.map(|v| veorq_s32(v, flip)))
    }
    #[inline]
    #[target_feature(enable = "neon,dotprod")]
    unsafe fn dot(self, input: Neon, weights: Neon) -> Neon {
        let mut acc = self.0;
        for (a, (x, w)) in acc.iter_mut().zip(input.0.into_iter().zip(weights.0)) {
            *a = sdot(*a, vreinterpretq_s8_s32(x), vreinterpretq_s8_s32(w));
        }
        Neon(acc)
    }
    #[inline]
    #[target_feature(enable = "neon,dotprod")]
    unsafe fn max(self, other: Neon) -> Neon {
        let mut acc = self.0;
        for (a, b) in acc.iter_mut().zip(other.0) {
            *a = vmaxq_s32(*a, b);
        }
        Neon(acc)
    }
    #[inline]
    #[target_feature(enable = "neon,dotprod")]
    unsafe fn store(self, dst: &mut [f32]) {
        super::store_lanes(self.lanes(), dst);
    }
    #[inline]
    #[target_feature(enable = "neon,dotprod")]
    unsafe fn store_pair_max(self, dst: &mut [f32]) {
        super::store_pair_max_lanes(self.lanes(), dst);
    }
    #[inline]
    #[target_feature(enable = "neon,dotprod")]
    unsafe fn sum(self) -> i32 {
        self.0.iter().fold(0i32, |s, &v| s.wrapping_add(vaddvq_s32(v)))
    }
}

/// Four channels per tile (sixteen of the thirty-two vector registers), two when pooling
/// keeps two rows.
#[target_feature(enable = "neon,dotprod")]
pub(super) fn run_sdot(
    p: &Packed,
    n: usize,
    pool: bool,
    load: &mut dyn FnMut(usize, &mut [u8]),
    out: &mut [f32],
    scratch: &mut IntScratch,
) {
    // SAFETY: this function is compiled for, and only called on, the dot-product extension.
    unsafe {
        if pool {
            p.run_with::<Neon, 2>(n, pool, load, out, scratch);
        } else {
            p.run_with::<Neon, 4>(n, pool, load, out, scratch);
        }
    }
}
