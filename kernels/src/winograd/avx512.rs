//! The AVX-512 body of [`super::convolve_pooled`]: sixteen tiles per vector.

use super::{BLOCK, ConvGeometry, LANES, POS, strides, tiles};
use std::arch::x86_64::*;
use std::mem::MaybeUninit;

/// The mask of the first `n` of 16 lanes.
#[inline]
fn first(n: usize) -> __mmask16 {
    if n >= 16 { !0 } else { (1u16 << n) - 1 }
}

/// `V = Bᵀ d B` for every tile and input channel, stored `[pos][ci][tile]` ([`strides`]). Sixteen tiles of a tile row at a time:
/// the four input rows of the tiles, each split into its even and odd columns from the
/// tiles' first column and from two columns on, which are the tiles' four columns.
///
/// Every address is computed once per group of sixteen tiles and checked once per group
/// (the first version indexed each of the sixteen stores and spent most of its time on
/// that, not on the transform).
#[target_feature(enable = "avx512f,fma")]
pub(super) fn transform_input(g: &ConvGeometry, padded: &[f32], v: &mut [f32]) {
    let (th, tw) = tiles(g);
    let (stride, pos_stride) = strides(g);
    let (pw, plane) = (g.padded_w(), g.padded_h() * g.padded_w());
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    for tx0 in (0..tw).step_by(LANES) {
        let lanes = (tw - tx0).min(LANES);
        // The sixteen floats from the tiles' first column and 16 on, and both from two
        // columns on; each masked to the floats its row has.
        let c0 = 2 * tx0;
        let cols = [c0, c0 + LANES, c0 + 2, c0 + 2 + LANES];
        let mut masks = [0 as __mmask16; 4];
        for (m, &c) in masks.iter_mut().zip(&cols) {
            *m = first(pw.saturating_sub(c));
        }
        for ci in 0..g.cin {
            for ty in 0..th {
                // The tile row's four input rows, checked once.
                let rows = &padded[ci * plane + 2 * ty * pw..][..4 * pw];
                let mut e = [[_mm512_setzero_ps(); 4]; 4];
                for (i, e) in e.iter_mut().enumerate() {
                    let mut x = [_mm512_setzero_ps(); 4];
                    for k in 0..4 {
                        let at = rows.as_ptr().wrapping_add(i * pw + cols[k]);
                        // SAFETY: the mask reads only the floats of row `i` from column
                        // `cols[k]`, all inside `rows`.
                        x[k] = unsafe { _mm512_maskz_loadu_ps(masks[k], at) };
                    }
                    let d0 = _mm512_permutex2var_ps(x[0], even, x[1]);
                    let d1 = _mm512_permutex2var_ps(x[0], odd, x[1]);
                    let d2 = _mm512_permutex2var_ps(x[2], even, x[3]);
                    let d3 = _mm512_permutex2var_ps(x[2], odd, x[3]);
                    // Row i of d B.
                    *e = [
                        _mm512_sub_ps(d0, d2),
                        _mm512_add_ps(d1, d2),
                        _mm512_sub_ps(d2, d1),
                        _mm512_sub_ps(d1, d3),
                    ];
                }
                // Position (i, j) of every tile at `pos_stride * (4 i + j)` from here.
                let span = &mut v[ci * stride + ty * tw + tx0..][..(POS - 1) * pos_stride + lanes];
                let dst = span.as_mut_ptr();
                // Indexed, not iterated: the columns of `e` are read down its rows.
                #[allow(clippy::needless_range_loop)]
                for j in 0..4 {
                    let col = [
                        _mm512_sub_ps(e[0][j], e[2][j]),
                        _mm512_add_ps(e[1][j], e[2][j]),
                        _mm512_sub_ps(e[2][j], e[1][j]),
                        _mm512_sub_ps(e[1][j], e[3][j]),
                    ];
                    for (i, val) in col.into_iter().enumerate() {
                        // SAFETY: `lanes` floats at `(4 i + j) * pos_stride`, inside `span`.
                        unsafe {
                            _mm512_mask_storeu_ps(dst.add((i * 4 + j) * pos_stride), first(lanes), val)
                        };
                    }
                }
            }
        }
    }
}

/// The products summed over channels, then `Aᵀ M A`, bias, pool and Relu: blocks of 8
/// output channels x 2 vectors of tiles (the last vector alone when odd).
#[target_feature(enable = "avx512f,fma")]
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
    for block in 0..g.cout.div_ceil(BLOCK) {
        let pairs = vectors - vectors % 2;
        for vec0 in (0..pairs).step_by(2) {
            tile::<2>(g, v, u, bias, relu, (block, vec0), out);
        }
        if pairs < vectors {
            tile::<1>(g, v, u, bias, relu, (block, pairs), out);
        }
    }
}

/// `R` vectors of tiles from `vec0` x the 8 channels of `block`: the sixteen positions'
/// sums in `R * 8` zmm accumulators each, kept in `m`, then the output transform.
#[target_feature(enable = "avx512f,fma")]
#[inline]
fn tile<const R: usize>(
    g: &ConvGeometry,
    v: &[f32],
    u: &[f32],
    bias: &[f32],
    relu: bool,
    (block, vec0): (usize, usize),
    out: &mut [f32],
) {
    let (th, tw) = tiles(g);
    let tiles = th * tw;
    let (stride, pos_stride) = strides(g);
    let coutp = g.cout.div_ceil(BLOCK) * BLOCK;
    // Written whole before it is read; left uninitialised, as zeroing it (16 KiB a call)
    // was 3% of the central model's time.
    let mut m = [[[MaybeUninit::<__m512>::uninit(); R]; BLOCK]; POS];
    for (pos, m) in m.iter_mut().enumerate() {
        let vpos = &v[pos * pos_stride..][..g.cin * stride];
        let upos = &u[pos * g.cin * coutp..][..g.cin * coutp];
        let mut acc = [[_mm512_setzero_ps(); BLOCK]; R];
        for (vrow, urow) in vpos.chunks_exact(stride).zip(upos.chunks_exact(coutp)) {
            let vrow = &vrow[vec0 * LANES..][..R * LANES];
            let w = &urow[block * BLOCK..][..BLOCK];
            let mut x = [_mm512_setzero_ps(); R];
            for (r, x) in x.iter_mut().enumerate() {
                // SAFETY: `vrow` holds `R * 16` floats.
                *x = unsafe { _mm512_loadu_ps(vrow[r * LANES..].as_ptr()) };
            }
            for c in 0..BLOCK {
                let w = _mm512_set1_ps(w[c]);
                for r in 0..R {
                    acc[r][c] = _mm512_fmadd_ps(w, x[r], acc[r][c]);
                }
            }
        }
        for (c, m) in m.iter_mut().enumerate() {
            for (r, m) in m.iter_mut().enumerate() {
                m.write(acc[r][c]);
            }
        }
    }
    let oc0 = block * BLOCK;
    for c in 0..BLOCK.min(g.cout - oc0) {
        let b = _mm512_set1_ps(bias[oc0 + c]);
        // Indexed, not iterated: `r` is both a vector of tiles and an axis of `m`.
        #[allow(clippy::needless_range_loop)]
        for r in 0..R {
            let t0 = (vec0 + r) * LANES;
            let lanes = tiles.saturating_sub(t0).min(LANES);
            if lanes == 0 {
                continue;
            }
            // M's rows, then Aᵀ M: rows 0 + 1 + 2 and 1 - 2 - 3; then times A, the same on
            // columns.
            let mut rows = [[_mm512_setzero_ps(); 4]; 4];
            for (pos, v) in rows.as_flattened_mut().iter_mut().enumerate() {
                // SAFETY: the loop over positions above wrote every element.
                *v = unsafe { m[pos][c][r].assume_init() };
            }
            let mut s = [[_mm512_setzero_ps(); 4]; 2];
            // Indexed, not iterated: column `j` of every row.
            #[allow(clippy::needless_range_loop)]
            for j in 0..4 {
                s[0][j] = _mm512_add_ps(_mm512_add_ps(rows[0][j], rows[1][j]), rows[2][j]);
                s[1][j] = _mm512_sub_ps(_mm512_sub_ps(rows[1][j], rows[2][j]), rows[3][j]);
            }
            let mut y = _mm512_set1_ps(f32::NEG_INFINITY);
            for s in s {
                let left = _mm512_add_ps(_mm512_add_ps(s[0], s[1]), s[2]);
                let right = _mm512_sub_ps(_mm512_sub_ps(s[1], s[2]), s[3]);
                y = _mm512_max_ps(y, _mm512_max_ps(left, right));
            }
            // The bias after the max: rounding is monotonic, so this equals the max of
            // the biased outputs; Relu likewise commutes with max.
            let y = _mm512_add_ps(y, b);
            let y = if relu { _mm512_max_ps(y, _mm512_setzero_ps()) } else { y };
            let dst = &mut out[(oc0 + c) * tiles + t0..][..lanes];
            // SAFETY: the mask writes exactly `lanes` floats, the length of `dst`.
            unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr(), first(lanes), y) };
        }
    }
}
