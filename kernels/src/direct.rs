//! The f32 kernels of the direct convolution (AVX-512, AVX2+FMA, portable), chosen at run
//! time, and the weight packing they read.
//!
//! The input is one image, zero padded (`[cin][padded_h][padded_w]` of [`ConvGeometry`]);
//! the weights are packed at load by [`pack`] in blocks of eight output channels
//! (`[block][ci][ky][kx][8]`, the last block padded with zeros) and the bias by
//! [`pad_bias`]. An int8 convolution runs here too, exactly, on integers held in f32.

use crate::geometry::{BLOCK, ConvGeometry, TILE};

/// `weights` (OIHW, `cout * taps` values) in the blocked layout the kernels read.
pub fn pack(g: &ConvGeometry, weights: &[f32]) -> Vec<f32> {
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

/// `bias` (one value per output channel) padded with zeros to whole blocks.
pub fn pad_bias(g: &ConvGeometry, bias: &[f32]) -> Vec<f32> {
    let mut padded = vec![0f32; g.blocks() * BLOCK];
    padded[..bias.len()].copy_from_slice(bias);
    padded
}

/// Whether [`convolve`] takes the 2x2 max pool as it stores on this CPU (AVX-512, AVX2),
/// rather than through a full-size buffer.
pub fn pools_in_kernel() -> bool {
    Kernel::best() != Kernel::Portable
}

/// The path [`convolve`] takes on this CPU (for benchmark reports).
pub fn kernel_path() -> &'static str {
    match Kernel::best() {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => "avx512f+fma",
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => "avx2+fma",
        Kernel::Portable => "portable",
    }
}

/// The kernels [`convolve`] chooses from, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

impl Kernel {
    /// The widest kernel this CPU runs.
    fn best() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("fma") {
            if is_x86_feature_detected!("avx512f") {
                return Kernel::Avx512;
            }
            if is_x86_feature_detected!("avx2") {
                return Kernel::Avx2;
            }
        }
        Kernel::Portable
    }
}

/// Picks the widest kernel this CPU runs. With `pool`, which only a CPU where
/// [`pools_in_kernel`] takes, `out` is max-pooled 2x2 with stride 2 (`[cout][oh / 2][ow /
/// 2]`, odd trailing rows and columns dropped).
pub fn convolve(
    g: &ConvGeometry,
    padded: &[f32],
    packed: &[f32],
    bias: &[f32],
    relu: bool,
    pool: bool,
    out: &mut [f32],
) {
    match Kernel::best() {
        // SAFETY: `Kernel::best` found the features the function is compiled for.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => unsafe { convolve_avx512(g, padded, packed, bias, relu, pool, out) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => unsafe { convolve_avx2(g, padded, packed, bias, relu, pool, out) },
        Kernel::Portable => {
            assert!(!pool, "convolve: no kernel on this CPU pools as it stores");
            convolve_portable(g, padded, packed, bias, relu, out);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
fn convolve_avx512(
    g: &ConvGeometry,
    padded: &[f32],
    packed: &[f32],
    bias: &[f32],
    relu: bool,
    pool: bool,
    out: &mut [f32],
) {
    // Sixteen zmm accumulators, enough independent FMAs in flight for two FMA pipes: two
    // output rows of 16 columns x eight channels, so that per tap two row loads and eight
    // broadcast weights feed sixteen FMAs. Measured against one row x sixteen channels (a
    // load per FMA) and four rows x four channels: `docs/performance.md`. An odd last row
    // goes alone, or, when pooling, is dropped: each pair of rows is a row of 2x2 windows.
    let taps = g.taps();
    let pairs = g.oh - g.oh % 2;
    for block in 0..g.blocks() {
        let weights = &packed[block * taps * BLOCK..][..taps * BLOCK];
        for tile in 0..g.tiles() {
            let x0 = tile * TILE;
            for y in (0..pairs).step_by(2) {
                tile_avx512::<2>(g, padded, weights, bias, block, (y, x0), relu, pool, out);
            }
            for y in (pairs..g.oh).filter(|_| !pool) {
                tile_avx512::<1>(g, padded, weights, bias, block, (y, x0), relu, false, out);
            }
        }
    }
}

/// `R` output rows from `y` x 16 columns from `x0` x the 8 channels of weight block `block`,
/// in `R * 8` zmm accumulators; with `pool` (and `R` = 2) stored as one row of eight 2x2
/// maxima.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[inline]
#[allow(clippy::too_many_arguments)]
fn tile_avx512<const R: usize>(
    g: &ConvGeometry,
    padded: &[f32],
    weights: &[f32],
    bias: &[f32],
    block: usize,
    (y, x0): (usize, usize),
    relu: bool,
    pool: bool,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let oc0 = block * BLOCK;
    let (pw, plane_in) = (g.padded_w(), g.padded_h() * g.padded_w());
    let mut acc = [[_mm512_setzero_ps(); BLOCK]; R];
    for row in &mut acc {
        for (c, a) in row.iter_mut().enumerate() {
            *a = _mm512_set1_ps(bias[oc0 + c]);
        }
    }
    for ci in 0..g.cin {
        for ky in 0..g.kh {
            // Whole-row slices checked once, so the tap loop needs no checks. (Plain loops, not
            // closures: a closure is not compiled for this function's target features.)
            let mut rows: [&[f32]; R] = [&[]; R];
            for (r, row) in rows.iter_mut().enumerate() {
                *row = &padded[ci * plane_in + (y + r + ky) * pw + x0..][..TILE + g.kw - 1];
            }
            let tap0 = (ci * g.kh + ky) * g.kw;
            for (kx, w) in weights[tap0 * BLOCK..][..g.kw * BLOCK].chunks_exact(BLOCK).enumerate() {
                let mut v = [_mm512_setzero_ps(); R];
                for r in 0..R {
                    // SAFETY: each row holds `TILE + kw - 1` floats, so 16 from `kx`.
                    v[r] = unsafe { _mm512_loadu_ps(rows[r][kx..][..TILE].as_ptr()) };
                }
                for c in 0..BLOCK {
                    let w = _mm512_set1_ps(w[c]);
                    for r in 0..R {
                        acc[r][c] = _mm512_fmadd_ps(w, v[r], acc[r][c]);
                    }
                }
            }
        }
    }
    if pool && R == 2 {
        // The vertical max of the two rows, then of each even lane and the odd one after it,
        // gathered into the low eight lanes. Relu commutes with max, so it comes last.
        let (ph, pw) = (g.oh / 2, g.ow / 2);
        let cols = pw.saturating_sub(x0 / 2).min(TILE / 2);
        let mask: __mmask16 = (1u16 << cols) - 1;
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 0, 0, 0, 0, 0, 0, 0, 0);
        let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 0, 0, 0, 0, 0, 0, 0, 0);
        // Every channel first, so that the accumulators are indexed only by constants and
        // stay in registers; then the channels that exist are stored.
        let mut maxima = [_mm512_setzero_ps(); BLOCK];
        for (c, m) in maxima.iter_mut().enumerate() {
            let v = _mm512_max_ps(acc[0][c], acc[R - 1][c]);
            let v = _mm512_max_ps(_mm512_permutexvar_ps(even, v), _mm512_permutexvar_ps(odd, v));
            *m = if relu { _mm512_max_ps(v, _mm512_setzero_ps()) } else { v };
        }
        for (c, v) in maxima.into_iter().enumerate().take(g.cout - oc0) {
            let dst = &mut out[(oc0 + c) * ph * pw + (y / 2) * pw + x0 / 2..][..cols];
            // SAFETY: the mask writes exactly `cols` floats, the length of `dst`.
            unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr(), mask, v) };
        }
        return;
    }
    let plane_out = g.oh * g.ow;
    let cols = TILE.min(g.ow - x0);
    let mask: __mmask16 = if cols == TILE { !0 } else { (1u16 << cols) - 1 };
    for (r, row) in acc.into_iter().enumerate() {
        for (c, a) in row.into_iter().enumerate().take(g.cout - oc0) {
            let a = if relu { _mm512_max_ps(a, _mm512_setzero_ps()) } else { a };
            let dst = &mut out[(oc0 + c) * plane_out + (y + r) * g.ow + x0..][..cols];
            // SAFETY: the mask writes exactly `cols` floats, the length of `dst`.
            unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr(), mask, a) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) fn convolve_avx2(
    g: &ConvGeometry,
    padded: &[f32],
    packed: &[f32],
    bias: &[f32],
    relu: bool,
    pool: bool,
    out: &mut [f32],
) {
    // Eight ymm accumulators: two output rows of eight columns x four channels, so that per
    // tap two row loads and four broadcast weights feed eight FMAs, and the 2x2 pool can be
    // taken as they are stored. Twelve accumulators (three rows, or four channels and input
    // operands from memory) spill on sixteen registers and were slower; so was the kernel
    // width as a run-time loop bound, which this specialises for the common widths
    // (`docs/performance.md`, "AVX2 without AVX-512").
    match g.kw {
        3 => convolve_avx2_with::<3>(g, padded, packed, bias, relu, pool, out),
        1 => convolve_avx2_with::<1>(g, padded, packed, bias, relu, pool, out),
        5 => convolve_avx2_with::<5>(g, padded, packed, bias, relu, pool, out),
        _ => convolve_avx2_with::<0>(g, padded, packed, bias, relu, pool, out),
    }
}

/// Output channels per AVX2 tile.
#[cfg(target_arch = "x86_64")]
const AVX2_OB: usize = 4;
/// Output columns per AVX2 tile: one ymm register.
#[cfg(target_arch = "x86_64")]
const AVX2_COLS: usize = 8;

/// [`convolve_avx2`] for kernel width `KW`, or `g.kw` read at run time when `KW` is 0.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn convolve_avx2_with<const KW: usize>(
    g: &ConvGeometry,
    padded: &[f32],
    packed: &[f32],
    bias: &[f32],
    relu: bool,
    pool: bool,
    out: &mut [f32],
) {
    let taps = g.taps();
    let pairs = g.oh - g.oh % 2;
    // Every read of a tile lies within the padded image (its last tile's columns within the
    // padded row, `padded_w` being whole 16-column tiles wide plus the kernel) and every write
    // within `out`: checked once here for the unchecked accesses of `tile_avx2`.
    assert!(padded.len() >= g.cin * g.padded_h() * g.padded_w(), "padded input too short");
    assert!(g.padded_w() >= g.ow.div_ceil(AVX2_COLS) * AVX2_COLS + g.kw - 1);
    assert!(packed.len() >= g.blocks() * taps * BLOCK && bias.len() >= g.blocks() * BLOCK);
    let out_len = if pool { g.cout * (g.oh / 2) * (g.ow / 2) } else { g.cout * g.oh * g.ow };
    assert!(out.len() >= out_len, "output too short");
    for block in 0..g.blocks() {
        let weights = &packed[block * taps * BLOCK..][..taps * BLOCK];
        for sub in (0..BLOCK).step_by(AVX2_OB) {
            if block * BLOCK + sub >= g.cout {
                break;
            }
            let tile = Avx2Tile { g, padded, weights, bias, oc0: block * BLOCK + sub, sub, relu };
            for x0 in (0..g.ow).step_by(AVX2_COLS) {
                for y in (0..pairs).step_by(2) {
                    // SAFETY: the CPU has AVX2 and FMA (this function's features); the bounds
                    // are checked above.
                    unsafe { tile.run::<2, KW>(y, x0, pool, out) };
                }
                for y in (pairs..g.oh).filter(|_| !pool) {
                    // SAFETY: as above.
                    unsafe { tile.run::<1, KW>(y, x0, false, out) };
                }
            }
        }
    }
}

/// One AVX2 tile's fixed parts: the image, one channel block's weights, and which four of
/// its channels.
#[cfg(target_arch = "x86_64")]
struct Avx2Tile<'a> {
    g: &'a ConvGeometry,
    padded: &'a [f32],
    /// The block's weights, `[ci][ky][kx][BLOCK]`.
    weights: &'a [f32],
    bias: &'a [f32],
    /// The tile's first output channel, `sub` into its block.
    oc0: usize,
    sub: usize,
    relu: bool,
}

#[cfg(target_arch = "x86_64")]
impl Avx2Tile<'_> {
    /// `R` output rows from `y` x 8 columns from `x0` x 4 channels into `out`; with `pool`
    /// (and `R` = 2) stored as one row of four 2x2 maxima.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA, and [`convolve_avx2_with`]'s bounds hold.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn run<const R: usize, const KW: usize>(&self, y: usize, x0: usize, pool: bool, out: &mut [f32]) {
        use std::arch::x86_64::*;
        const OB: usize = AVX2_OB;
        let g = self.g;
        let kw = if KW == 0 { g.kw } else { KW };
        let (pw, plane_in) = (g.padded_w(), g.padded_h() * g.padded_w());
        let mut acc = [[_mm256_setzero_ps(); OB]; R];
        // SAFETY: every input read is at most row `y + R - 1 + kh - 1 < padded_h` of a plane,
        // columns `x0 + kx .. x0 + kx + 8 <= padded_w`; every weight read is within the block's
        // `taps * BLOCK`, channels `sub + ob < BLOCK`; `oc0 + ob` is within the padded bias.
        unsafe {
            for row in acc.iter_mut() {
                for (ob, a) in row.iter_mut().enumerate() {
                    *a = _mm256_set1_ps(*self.bias.get_unchecked(self.oc0 + ob));
                }
            }
            let origin = self.padded.as_ptr().add(y * pw + x0);
            let mut w = self.weights.as_ptr().add(self.sub);
            for ci in 0..g.cin {
                for ky in 0..g.kh {
                    let row = origin.add(ci * plane_in + ky * pw);
                    for kx in 0..kw {
                        let v: [__m256; R] = std::array::from_fn(|r| _mm256_loadu_ps(row.add(r * pw + kx)));
                        // Indexed, not iterated: an array iterator would move the vectors
                        // through memory.
                        #[allow(clippy::needless_range_loop)]
                        for ob in 0..OB {
                            let wv = _mm256_broadcast_ss(&*w.add(kx * BLOCK + ob));
                            for r in 0..R {
                                acc[r][ob] = _mm256_fmadd_ps(wv, v[r], acc[r][ob]);
                            }
                        }
                    }
                    w = w.add(kw * BLOCK);
                }
            }
        }
        let live = OB.min(g.cout - self.oc0);
        let relu = |v: __m256| if self.relu { _mm256_max_ps(v, _mm256_setzero_ps()) } else { v };
        if pool && R == 2 {
            // The vertical max of the two rows, then of each even lane and the odd one after
            // it: evens to the low half, odds to the high one. Relu commutes with max.
            let (ph, pw) = (g.oh / 2, g.ow / 2);
            let cols = (pw - x0 / 2).min(AVX2_COLS / 2);
            let split = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
            for (ob, (&top, &bottom)) in acc[0].iter().zip(&acc[R - 1]).enumerate().take(live) {
                let v = _mm256_permutevar8x32_ps(_mm256_max_ps(top, bottom), split);
                let v = relu(_mm256_castps128_ps256(_mm_max_ps(
                    _mm256_castps256_ps128(v),
                    _mm256_extractf128_ps::<1>(v),
                )));
                let dst = &mut out[(self.oc0 + ob) * ph * pw + (y / 2) * pw + x0 / 2..][..cols];
                store_avx2(v, dst);
            }
            return;
        }
        let plane_out = g.oh * g.ow;
        let cols = AVX2_COLS.min(g.ow - x0);
        for (r, row) in acc.iter().enumerate() {
            for (ob, &a) in row.iter().enumerate().take(live) {
                let dst = &mut out[(self.oc0 + ob) * plane_out + (y + r) * g.ow + x0..][..cols];
                store_avx2(relu(a), dst);
            }
        }
    }
}

/// The first `dst.len()` (at most eight) lanes of `v` into `dst`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn store_avx2(v: std::arch::x86_64::__m256, dst: &mut [f32]) {
    use std::arch::x86_64::*;
    if dst.len() == AVX2_COLS {
        // SAFETY: `dst` holds the eight floats written.
        unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), v) };
    } else {
        let mut lanes = [0f32; AVX2_COLS];
        // SAFETY: `lanes` holds eight floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
        let n = dst.len();
        crate::copy_row(dst, &lanes[..n]);
    }
}

/// Everywhere else (baseline x86-64, aarch64): plain loops, one output channel at a time so
/// the compiler vectorises along the columns.
pub(crate) fn convolve_portable(
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

#[cfg(test)]
pub(crate) mod tests;
