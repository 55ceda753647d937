//! The x86_64 kernels: AVX-512 VNNI, AVX-VNNI and plain AVX2 bodies of [`super::Lanes`], and
//! the entry points compiled for each.

use std::arch::x86_64::*;

use super::{BLOCK, Form, IntScratch, Lanes, Packed, Rows, VECTOR};

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

/// What AVX-VNNI and plain AVX2 share: sixteen lanes as two 256-bit vectors. Compiled for
/// AVX2 alone, and inlined into either body.
mod ymm {
    use super::super::VECTOR;
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn splat(v: i32) -> [__m256i; 2] {
        [_mm256_set1_epi32(v); 2]
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn load(bytes: &[u8]) -> [__m256i; 2] {
        let bytes = &bytes[..VECTOR];
        // SAFETY: `bytes` holds the 64 bytes read, 32 per half.
        unsafe {
            [_mm256_loadu_si256(bytes.as_ptr().cast()), _mm256_loadu_si256(bytes[32..].as_ptr().cast())]
        }
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn max(a: [__m256i; 2], b: [__m256i; 2]) -> [__m256i; 2] {
        [_mm256_max_epi32(a[0], b[0]), _mm256_max_epi32(a[1], b[1])]
    }
    /// The sixteen lanes.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn lanes(v: [__m256i; 2]) -> [i32; 16] {
        let mut lanes = [0i32; 16];
        // SAFETY: each half of `lanes` holds 8 i32.
        unsafe {
            _mm256_storeu_si256(lanes.as_mut_ptr().cast(), v[0]);
            _mm256_storeu_si256(lanes[8..].as_mut_ptr().cast(), v[1]);
        }
        lanes
    }
    /// The first `dst.len()` (at most 16) lanes as f32: converted in vectors, stored whole
    /// when all sixteen are wanted (the common case), through a buffer otherwise.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn store(v: [__m256i; 2], dst: &mut [f32]) {
        let f = v.map(|v| _mm256_cvtepi32_ps(v));
        if dst.len() == 16 {
            // SAFETY: `dst` holds the sixteen floats written, eight per half.
            unsafe {
                _mm256_storeu_ps(dst.as_mut_ptr(), f[0]);
                _mm256_storeu_ps(dst[8..].as_mut_ptr(), f[1]);
            }
        } else {
            let mut all = [0f32; 16];
            // SAFETY: each half of `all` holds 8 floats.
            unsafe {
                _mm256_storeu_ps(all.as_mut_ptr(), f[0]);
                _mm256_storeu_ps(all[8..].as_mut_ptr(), f[1]);
            }
            let n = dst.len().min(16);
            crate::copy_row(&mut dst[..n], &all[..n]);
        }
    }
    /// The larger of lanes `2i` and `2i + 1` as f32, for the first `dst.len()` (at most 8)
    /// `i`: each half's even and odd lanes gathered into its two 128-bit halves, their max.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn store_pair_max(v: [__m256i; 2], dst: &mut [f32]) {
        let split = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
        let [a, b] = v.map(|v| {
            let v = _mm256_permutevar8x32_epi32(v, split);
            _mm_max_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v))
        });
        let pairs = _mm256_cvtepi32_ps(_mm256_set_m128i(b, a));
        if dst.len() == 8 {
            // SAFETY: `dst` holds the eight floats written.
            unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), pairs) };
        } else {
            let mut all = [0f32; 8];
            // SAFETY: `all` holds 8 floats.
            unsafe { _mm256_storeu_ps(all.as_mut_ptr(), pairs) };
            let n = dst.len().min(8);
            crate::copy_row(&mut dst[..n], &all[..n]);
        }
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn sum(v: [__m256i; 2]) -> i32 {
        lanes(v).iter().fold(0i32, |s, &x| s.wrapping_add(x))
    }
}

/// The methods of [`Lanes`] that AVX-VNNI and plain AVX2 share, for the body `$lanes`
/// compiled for `$features`: each forwards to [`ymm`], inlined into it.
macro_rules! ymm_lanes {
    ($lanes:ident, $features:literal) => {
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn load_input(bytes: &[u8]) -> $lanes {
            $lanes(ymm::load(bytes))
        }
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn splat(v: i32) -> $lanes {
            $lanes(ymm::splat(v))
        }
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn load(bytes: &[u8]) -> $lanes {
            $lanes(ymm::load(bytes))
        }
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn max(self, other: $lanes) -> $lanes {
            $lanes(ymm::max(self.0, other.0))
        }
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn store(self, dst: &mut [f32]) {
            ymm::store(self.0, dst);
        }
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn store_pair_max(self, dst: &mut [f32]) {
            ymm::store_pair_max(self.0, dst);
        }
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn sum(self) -> i32 {
            ymm::sum(self.0)
        }
    };
}

/// AVX-VNNI: two 256-bit vectors.
#[derive(Clone, Copy)]
pub(super) struct Avx256([__m256i; 2]);

// As for `Avx512`.
impl Lanes for Avx256 {
    const SIGNED: bool = false;
    ymm_lanes!(Avx256, "avx2,avxvnni");
    #[inline]
    #[target_feature(enable = "avx2,avxvnni")]
    unsafe fn dot(self, input: Avx256, weights: Avx256) -> Avx256 {
        Avx256([
            _mm256_dpbusd_avx_epi32(self.0[0], input.0[0], weights.0[0]),
            _mm256_dpbusd_avx_epi32(self.0[1], input.0[1], weights.0[1]),
        ])
    }
}

/// Plain AVX2, without a byte dot product: `vpmaddwd`, which multiplies 16-bit pairs and
/// adds each pair into an i32 lane. The row kernel gets its input and weights already as
/// pairs ([`Form::Pairs`]): per lane, input bytes 0 and 2 (and 1 and 3) zero-extended, and
/// the matching weights sign-extended, so each four-byte dot product is two `vpmaddwd` and
/// two adds, with nothing to split in the loop ([`Avx2::row_tile`]). Each product is at most
/// 255 x 128 in magnitude and each pair fits an i32, so the sum is exact, as the instruction
/// sets with a byte dot product compute it. (`vpmaddubsw`, which multiplies bytes directly,
/// saturates its pair sums at 16 bits and would not be.) The one-pixel layout keeps bytes and
/// splits them in [`Lanes::dot`].
#[derive(Clone, Copy)]
pub(super) struct Avx2([__m256i; 2]);

impl Lanes for Avx2 {
    const SIGNED: bool = false;
    const FORM: Form = Form::Pairs;
    ymm_lanes!(Avx2, "avx2");
    /// Each lane's four bytes split into the even ones (0 and 2) and the odd ones (1 and 3),
    /// widened in place to 16 bits (inputs zero-extended by a mask or a shift, weights
    /// sign-extended by shifts), and a `vpmaddwd` for each.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn dot(self, input: Avx2, weights: Avx2) -> Avx2 {
        let low_bytes = _mm256_set1_epi16(0x00ff);
        Avx2(std::array::from_fn(|h| {
            let (x, w) = (input.0[h], weights.0[h]);
            let even = _mm256_madd_epi16(
                _mm256_and_si256(x, low_bytes),
                _mm256_srai_epi16::<8>(_mm256_slli_epi16::<8>(w)),
            );
            let odd = _mm256_madd_epi16(_mm256_srli_epi16::<8>(x), _mm256_srai_epi16::<8>(w));
            _mm256_add_epi32(self.0[h], _mm256_add_epi32(even, odd))
        }))
    }
    /// [`Rows::tile`] on pairs: per tap, each weight word is two broadcasts (even and odd
    /// weights), and each row's sixteen lanes are four loads (two halves of the even and of
    /// the odd plane), each multiplied with every channel's broadcast.
    #[inline(always)]
    unsafe fn row_tile<const OB: usize, const R: usize>(
        rows: &Rows<'_>,
        block: usize,
        sub: usize,
        y: usize,
        x0: usize,
    ) -> [[Avx2; OB]; R] {
        const WORD: usize = 8;
        let p = rows.p;
        debug_assert_eq!(p.form, Form::Pairs, "packed for pairs");
        let taps = &p.taps;
        // From a tap's even plane to its odd one, and from one padded row to the next.
        let odd = rows.qw * 4;
        let row_bytes = 2 * odd;
        // Everything the tile reads, checked once: every tap's even and odd vectors in each
        // of the rows.
        let span = taps.last().map_or(0, |&last| last + odd + VECTOR);
        let input = &rows.quads[y * row_bytes + x0 * 4..][..span + (R - 1) * row_bytes];
        let weights = &p.weights[block * taps.len() * BLOCK * WORD..][..taps.len() * BLOCK * WORD];
        assert!(sub + OB <= BLOCK, "a tile's channels lie in one weight block");
        let offsets = &p.offsets::<Avx2>()[block * BLOCK + sub..][..OB];
        // SAFETY: the caller's CPU has AVX2. Every index below is in bounds: the offsets
        // ascend, so tap `t`'s odd vector ends within `span`, each row `row_bytes` further;
        // its weights end `(t * BLOCK + sub + OB) * WORD <= taps * BLOCK * WORD` bytes in.
        unsafe {
            let broadcast = |w: &[u8]| _mm256_set1_epi32(i32::from_le_bytes([w[0], w[1], w[2], w[3]]));
            let mut acc = [[Avx2([_mm256_setzero_si256(); 2]); OB]; R];
            for row in acc.iter_mut() {
                for (a, &o) in row.iter_mut().zip(offsets) {
                    *a = Avx2([_mm256_set1_epi32(o); 2]);
                }
            }
            for (t, &offset) in taps.iter().enumerate() {
                let w = weights.get_unchecked((t * BLOCK + sub) * WORD..(t * BLOCK + sub + OB) * WORD);
                let words: [[__m256i; 2]; OB] = std::array::from_fn(|ob| {
                    let w = w.get_unchecked(ob * WORD..(ob + 1) * WORD);
                    [broadcast(&w[..4]), broadcast(&w[4..])]
                });
                // Indexed, not iterated: an array iterator would move the vectors through
                // memory.
                #[allow(clippy::needless_range_loop)]
                for r in 0..R {
                    for h in 0..2 {
                        let at = offset + r * row_bytes + h * 32;
                        let even = _mm256_loadu_si256(input.get_unchecked(at..at + 32).as_ptr().cast());
                        let at = at + odd;
                        let odd = _mm256_loadu_si256(input.get_unchecked(at..at + 32).as_ptr().cast());
                        for ob in 0..OB {
                            let a = _mm256_add_epi32(acc[r][ob].0[h], _mm256_madd_epi16(even, words[ob][0]));
                            acc[r][ob].0[h] = _mm256_add_epi32(a, _mm256_madd_epi16(odd, words[ob][1]));
                        }
                    }
                }
            }
            acc
        }
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

/// Plain AVX2: four channels per tile, two when pooling (two rows of two): eight
/// accumulators, and the weight broadcasts beside them, of sixteen registers.
#[target_feature(enable = "avx2")]
pub(super) fn run_avx2(
    p: &Packed,
    n: usize,
    pool: bool,
    load: &mut dyn FnMut(usize, &mut [u8]),
    out: &mut [f32],
    scratch: &mut IntScratch,
) {
    // SAFETY: this function is compiled for, and only called on, AVX2.
    unsafe {
        if pool {
            p.run_with::<Avx2, 2>(n, pool, load, out, scratch);
        } else {
            p.run_with::<Avx2, 4>(n, pool, load, out, scratch);
        }
    }
}
