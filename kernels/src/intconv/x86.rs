//! The x86_64 kernels: AVX-512 VNNI and AVX-VNNI bodies of [`super::Lanes`], and the entry
//! points compiled for each.

use std::arch::x86_64::*;

use super::{IntScratch, Lanes, Packed, VECTOR};

/// AVX-512 VNNI: one 512-bit vector.
#[derive(Clone, Copy)]
pub(super) struct Avx512(__m512i);

// Each method is compiled for the instructions, so the intrinsics inline into it and it
// into the kernels; callers run on a CPU that has them.
impl Lanes for Avx512 {
    const SIGNED: bool = false;
    #[inline]
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn load_input(bytes: &[u8]) -> Avx512 {
        // SAFETY: same contract.
        unsafe { Avx512::load(bytes) }
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn splat(v: i32) -> Avx512 {
        Avx512(_mm512_set1_epi32(v))
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn load(bytes: &[u8]) -> Avx512 {
        let bytes = &bytes[..VECTOR];
        // SAFETY: `bytes` holds the 64 bytes read.
        Avx512(unsafe { _mm512_loadu_si512(bytes.as_ptr().cast()) })
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn dot(self, input: Avx512, weights: Avx512) -> Avx512 {
        Avx512(_mm512_dpbusd_epi32(self.0, input.0, weights.0))
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn max(self, other: Avx512) -> Avx512 {
        Avx512(_mm512_max_epi32(self.0, other.0))
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn store(self, dst: &mut [f32]) {
        let n = dst.len().min(16);
        let mask: __mmask16 = if n == 16 { !0 } else { (1u16 << n) - 1 };
        // SAFETY: the mask writes exactly `n <= dst.len()` floats.
        unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr(), mask, _mm512_cvtepi32_ps(self.0)) };
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn store_pair_max(self, dst: &mut [f32]) {
        // Even lanes and odd lanes side by side in the low halves of two vectors.
        let even = _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 14, 12, 10, 8, 6, 4, 2, 0);
        let odd = _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 15, 13, 11, 9, 7, 5, 3, 1);
        let pairs =
            _mm512_max_epi32(_mm512_permutexvar_epi32(even, self.0), _mm512_permutexvar_epi32(odd, self.0));
        let n = dst.len().min(8);
        let mask: __mmask16 = (1u16 << n) - 1;
        // SAFETY: the mask writes exactly `n <= dst.len()` floats.
        unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr(), mask, _mm512_cvtepi32_ps(pairs)) };
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn sum(self) -> i32 {
        _mm512_reduce_add_epi32(self.0)
    }
}

/// AVX-VNNI: two 256-bit vectors.
#[derive(Clone, Copy)]
pub(super) struct Avx256([__m256i; 2]);

impl Avx256 {
    /// The sixteen lanes.
    #[inline]
    #[target_feature(enable = "avx2,avxvnni")]
    fn lanes(self) -> [i32; 16] {
        let mut lanes = [0i32; 16];
        // SAFETY: each half of `lanes` holds 8 i32.
        unsafe {
            _mm256_storeu_si256(lanes.as_mut_ptr().cast(), self.0[0]);
            _mm256_storeu_si256(lanes[8..].as_mut_ptr().cast(), self.0[1]);
        }
        lanes
    }
}

// As for `Avx512`.
impl Lanes for Avx256 {
    const SIGNED: bool = false;
    #[inline]
    #[target_feature(enable = "avx2,avxvnni")]
    unsafe fn load_input(bytes: &[u8]) -> Avx256 {
        // SAFETY: same contract.
        unsafe { Avx256::load(bytes) }
    }
    #[inline]
    #[target_feature(enable = "avx2,avxvnni")]
    unsafe fn splat(v: i32) -> Avx256 {
        Avx256([_mm256_set1_epi32(v); 2])
    }
    #[inline]
    #[target_feature(enable = "avx2,avxvnni")]
    unsafe fn load(bytes: &[u8]) -> Avx256 {
        let bytes = &bytes[..VECTOR];
        // SAFETY: `bytes` holds the 64 bytes read, 32 per half.
        unsafe {
            Avx256([
                _mm256_loadu_si256(bytes.as_ptr().cast()),
                _mm256_loadu_si256(bytes[32..].as_ptr().cast()),
            ])
        }
    }
    #[inline]
    #[target_feature(enable = "avx2,avxvnni")]
    unsafe fn dot(self, input: Avx256, weights: Avx256) -> Avx256 {
        Avx256([
            _mm256_dpbusd_avx_epi32(self.0[0], input.0[0], weights.0[0]),
            _mm256_dpbusd_avx_epi32(self.0[1], input.0[1], weights.0[1]),
        ])
    }
    #[inline]
    #[target_feature(enable = "avx2,avxvnni")]
    unsafe fn max(self, other: Avx256) -> Avx256 {
        Avx256([_mm256_max_epi32(self.0[0], other.0[0]), _mm256_max_epi32(self.0[1], other.0[1])])
    }
    #[inline]
    #[target_feature(enable = "avx2,avxvnni")]
    unsafe fn store(self, dst: &mut [f32]) {
        super::store_lanes(self.lanes(), dst);
    }
    #[inline]
    #[target_feature(enable = "avx2,avxvnni")]
    unsafe fn store_pair_max(self, dst: &mut [f32]) {
        super::store_pair_max_lanes(self.lanes(), dst);
    }
    #[inline]
    #[target_feature(enable = "avx2,avxvnni")]
    unsafe fn sum(self) -> i32 {
        self.lanes().iter().fold(0i32, |s, &v| s.wrapping_add(v))
    }
}

/// Sixteen channels per tile on AVX-512 (sixteen zmm accumulators); eight when pooling
/// (two rows of eight) or when there are no more channels.
#[target_feature(enable = "avx512f,avx512vnni")]
pub(super) fn run_avx512(
    p: &Packed,
    n: usize,
    pool: bool,
    load: &mut dyn FnMut(usize, &mut [u8]),
    out: &mut [f32],
    scratch: &mut IntScratch,
) {
    // SAFETY: this function is compiled for, and only called on, AVX-512 VNNI.
    unsafe {
        if pool || p.geo.cout <= 8 {
            p.run_with::<Avx512, 8>(n, pool, load, out, scratch);
        } else {
            p.run_with::<Avx512, 16>(n, pool, load, out, scratch);
        }
    }
}

/// Four channels per tile on AVX-VNNI: eight ymm accumulators of sixteen registers; two
/// when pooling (two rows of two).
#[target_feature(enable = "avx2,avxvnni")]
pub(super) fn run_avx256(
    p: &Packed,
    n: usize,
    pool: bool,
    load: &mut dyn FnMut(usize, &mut [u8]),
    out: &mut [f32],
    scratch: &mut IntScratch,
) {
    // SAFETY: this function is compiled for, and only called on, AVX-VNNI.
    unsafe {
        if pool {
            p.run_with::<Avx256, 2>(n, pool, load, out, scratch);
        } else {
            p.run_with::<Avx256, 4>(n, pool, load, out, scratch);
        }
    }
}
