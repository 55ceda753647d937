//! The AVX2 body of [`super::convolve_pooled`]: eight tiles per vector, in the layout the
//! AVX-512 body shares (`[pos][ci][tile]`, [`strides`]).

use super::{BLOCK, ConvGeometry, POS, strides, tiles};
use std::arch::x86_64::*;
use std::mem::MaybeUninit;

/// Tiles per ymm vector.
const LANES: usize = 8;
/// Output channels per multiply tile: one vector of tiles x eight channels in eight
/// accumulators. Two vectors x four channels, the direct loop's AVX2 tile, was slower here;
/// more accumulators spill on sixteen registers.
pub(super) const OB: usize = 8;

/// A mask of the first `n` of eight lanes, for `maskload` and `maskstore`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn first(n: usize) -> __m256i {
    let n = n.min(LANES) as i32;
    _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
}

/// The even and the odd floats of sixteen (`lo`, then `hi`), each in order.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn deinterleave(lo: __m256, hi: __m256) -> (__m256, __m256) {
    // Within each 128-bit half: lo's pair then hi's pair; the 64-bit swap puts the halves in
    // order.
    let even = _mm256_shuffle_ps::<0b10_00_10_00>(lo, hi);
    let odd = _mm256_shuffle_ps::<0b11_01_11_01>(lo, hi);
    let order = |v: __m256| _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)));
    (order(even), order(odd))
}

/// `V = Bᵀ d B` for every tile and input channel, stored `[pos][ci][tile]`: eight tiles of a
/// tile row at a time, as the AVX-512 body does sixteen. The loads are masked to the floats
/// of the row, so the last tiles of a row read nothing past it.
///
/// The stores are whole vectors: AMD's masked stores cost several times a plain one, and
/// half the central model's groups are partial. The lanes past a row's last tile land on the
/// next tiles in memory (the next row's first, or past the plane's last, where the layout has
/// room), which are written later in this loop's ascending order, or never read.
#[target_feature(enable = "avx2,fma")]
pub(super) fn transform_input(g: &ConvGeometry, padded: &[f32], v: &mut [f32]) {
    let (th, tw) = tiles(g);
    let (stride, pos_stride) = strides(g);
    let (pw, plane) = (g.padded_w(), g.padded_h() * g.padded_w());
    // Every store lies within `v`: tile `t < th * tw` of channel `ci` at `ci * stride + t`,
    // eight floats, sixteen positions apart by `pos_stride`, which leaves a vector's room
    // past the last channel.
    assert!(v.len() >= POS * pos_stride && pos_stride >= g.cin * stride + LANES);
    for ci in 0..g.cin {
        for ty in 0..th {
            // The tile row's four input rows, checked once.
            let rows = &padded[ci * plane + 2 * ty * pw..][..4 * pw];
            for tx0 in (0..tw).step_by(LANES) {
                // The eight floats from the tiles' first column and eight on, and both from
                // two columns on; each masked to the floats its row has.
                let c0 = 2 * tx0;
                let cols = [c0, c0 + LANES, c0 + 2, c0 + 2 + LANES];
                let masks = cols.map(|c| first(pw.saturating_sub(c)));
                let mut e = [[_mm256_setzero_ps(); 4]; 4];
                for (i, e) in e.iter_mut().enumerate() {
                    let x: [__m256; 4] = std::array::from_fn(|k| {
                        let at = rows.as_ptr().wrapping_add(i * pw + cols[k]);
                        // SAFETY: the mask reads only the floats of row `i` from column
                        // `cols[k]`, all inside `rows`.
                        unsafe { _mm256_maskload_ps(at, masks[k]) }
                    });
                    let (d0, d1) = deinterleave(x[0], x[1]);
                    let (d2, d3) = deinterleave(x[2], x[3]);
                    // Row i of d B.
                    *e = [
                        _mm256_sub_ps(d0, d2),
                        _mm256_add_ps(d1, d2),
                        _mm256_sub_ps(d2, d1),
                        _mm256_sub_ps(d1, d3),
                    ];
                }
                // Position (i, j) of every tile at `pos_stride * (4 i + j)` from here.
                let dst = v[ci * stride + ty * tw + tx0..][..(POS - 1) * pos_stride + LANES].as_mut_ptr();
                // Indexed, not iterated: the columns of `e` are read down its rows.
                #[allow(clippy::needless_range_loop)]
                for j in 0..4 {
                    let col = [
                        _mm256_sub_ps(e[0][j], e[2][j]),
                        _mm256_add_ps(e[1][j], e[2][j]),
                        _mm256_sub_ps(e[2][j], e[1][j]),
                        _mm256_sub_ps(e[1][j], e[3][j]),
                    ];
                    for (i, val) in col.into_iter().enumerate() {
                        // SAFETY: eight floats at `(4 i + j) * pos_stride`, inside the slice.
                        unsafe { _mm256_storeu_ps(dst.add((i * 4 + j) * pos_stride), val) };
                    }
                }
            }
        }
    }
}

/// The products summed over channels, then `Aᵀ M A`, bias, pool and Relu: a vector of tiles
/// x eight output channels at a time.
#[target_feature(enable = "avx2,fma")]
pub(super) fn multiply_and_pool(
    g: &ConvGeometry,
    v: &[f32],
    u: &[f32],
    bias: &[f32],
    relu: bool,
    out: &mut [f32],
) {
    let (th, tw) = tiles(g);
    let vectors = (th * tw).div_ceil(LANES);
    let coutp = g.cout.div_ceil(BLOCK) * BLOCK;
    let (stride, pos_stride) = strides(g);
    // What `tile` reads without checks: every position's channels' vectors (the tiles
    // rounded up to whole vectors lie within `stride`) and every channel's weights.
    assert!(vectors * LANES <= stride && v.len() >= (POS - 1) * pos_stride + g.cin * stride);
    assert!(u.len() >= POS * g.cin * coutp && bias.len() >= coutp);
    // A vector's transformed input (sixteen positions x the channels) stays in L1 while
    // every block of output channels reads it.
    for vec in 0..vectors {
        for oc0 in (0..g.cout).step_by(OB) {
            // SAFETY: the CPU has AVX2 and FMA (this function's features); the bounds are
            // asserted above.
            unsafe { tile(g, v, u, bias, relu, (oc0, vec), out) };
        }
    }
}

/// Vector `vec` of tiles x eight channels from `oc0`: the sixteen positions' sums in eight
/// ymm accumulators each, kept in `m`, then the output transform.
///
/// # Safety
/// The CPU has AVX2 and FMA, and [`multiply_and_pool`]'s bounds hold.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn tile(
    g: &ConvGeometry,
    v: &[f32],
    u: &[f32],
    bias: &[f32],
    relu: bool,
    (oc0, vec): (usize, usize),
    out: &mut [f32],
) {
    let (th, tw) = tiles(g);
    let tiles = th * tw;
    let (stride, pos_stride) = strides(g);
    // Written whole before it is read; left uninitialised, as zeroing it (4 KiB a call) was
    // 5% of the central model's time, and building it with `array::from_fn` copied it.
    let mut m = [[MaybeUninit::<__m256>::uninit(); OB]; POS];
    for (pos, m) in m.iter_mut().enumerate() {
        let mut acc = [_mm256_setzero_ps(); OB];
        // SAFETY: channel `ci`'s vector is `pos * pos_stride + ci * stride + vec * 8` floats
        // into `v`, its eight floats within `stride`; its weights `((oc0 / 8 * 16 + pos) *
        // cin + ci) * 8 + ob` into `u` (`Isa::weight_index`), `oc0 + ob < coutp`.
        unsafe {
            let mut x = v.as_ptr().add(pos * pos_stride + vec * LANES);
            let mut w = u.as_ptr().add((oc0 / OB * POS + pos) * g.cin * OB);
            for _ in 0..g.cin {
                let input = _mm256_loadu_ps(x);
                for (ob, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm256_fmadd_ps(_mm256_broadcast_ss(&*w.add(ob)), input, *acc);
                }
                x = x.add(stride);
                w = w.add(OB);
            }
        }
        for (m, acc) in m.iter_mut().zip(acc) {
            m.write(acc);
        }
    }
    let t0 = vec * LANES;
    let lanes = (tiles - t0).min(LANES);
    for ob in 0..OB.min(g.cout - oc0) {
        // M's rows, then Aᵀ M: rows 0 + 1 + 2 and 1 - 2 - 3; then times A, the same on
        // columns.
        // SAFETY: the loop over positions above wrote every element.
        let at = |i: usize, j: usize| unsafe { m[i * 4 + j][ob].assume_init() };
        let s: [[__m256; 4]; 2] = [
            std::array::from_fn(|j| _mm256_add_ps(_mm256_add_ps(at(0, j), at(1, j)), at(2, j))),
            std::array::from_fn(|j| _mm256_sub_ps(_mm256_sub_ps(at(1, j), at(2, j)), at(3, j))),
        ];
        let mut y = _mm256_set1_ps(f32::NEG_INFINITY);
        for s in s {
            let left = _mm256_add_ps(_mm256_add_ps(s[0], s[1]), s[2]);
            let right = _mm256_sub_ps(_mm256_sub_ps(s[1], s[2]), s[3]);
            y = _mm256_max_ps(y, _mm256_max_ps(left, right));
        }
        // The bias after the max: rounding is monotonic, so this equals the max of the biased
        // outputs; Relu likewise commutes with max.
        let y = _mm256_add_ps(y, _mm256_set1_ps(bias[oc0 + ob]));
        let y = if relu { _mm256_max_ps(y, _mm256_setzero_ps()) } else { y };
        let dst = &mut out[(oc0 + ob) * tiles + t0..][..lanes];
        if lanes == LANES {
            // SAFETY: `dst` holds the eight floats written.
            unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), y) };
        } else {
            // SAFETY: the mask writes exactly `lanes` floats, the length of `dst`.
            unsafe { _mm256_maskstore_ps(dst.as_mut_ptr(), first(lanes), y) };
        }
    }
}
