//! Winograd F(2x2, 3x3) for the fp32 loop's pooled 3x3 convolutions, on AVX-512 and AVX2.
//!
//! A 3x3 convolution computed directly costs 36 multiplies per 2x2 block of outputs and input
//! channel; Winograd's minimal filtering computes the same block from a 4x4 input tile with
//! 16 (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2015): each input
//! tile `d` becomes `V = Bᵀ d B`, each 3x3 kernel `g` becomes `U = G g Gᵀ` (once, at load), the
//! channels are summed position by position (`M = Σ_ci U ⊙ V`, sixteen small matrix
//! products) and `Y = Aᵀ M A` gives the 2x2 outputs. The transforms are additions only; the
//! products are 2.25x fewer than the direct loop's.
//!
//! Only where a 2x2/s2 max pool is fused: a Winograd output tile is then exactly one pool
//! window, so the pooled output plane is in tile order and stores in whole vectors. Not exact
//! like the direct loop (the sums are re-associated), within a few units in the last place of
//! the outputs' magnitude; the int8 form, which must be exact, never comes here.
//!
//! Layout: lanes run along tiles everywhere (tile `t = ty * tw + tx` of the pooled plane), as
//! the direct loop's lanes run along columns, so the products are the direct loop's tile of
//! FMAs with the tile index in place of the column. The bodies for each instruction set are
//! in `avx512.rs` (sixteen tiles per vector) and `avx2.rs` (eight) beside this file; they
//! share the transformed input's layout.

use crate::geometry::{BLOCK, ConvGeometry};

/// Positions of a transformed 4x4 tile.
const POS: usize = 16;
/// Tiles per vector.
const LANES: usize = 16;

/// `Gᵀ`'s rows as used in `U = G g Gᵀ`: the kernel transform.
const G: [[f64; 3]; 4] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];

/// The kernels transformed, from the direct loop's packing (`packed`:
/// `[block][ci][ky][kx][BLOCK]`), for a 3x3 convolution on a CPU with a body here, of enough
/// input channels to pay (`Isa::min_channels`: two on AVX-512, one on AVX2); `None`
/// otherwise. Computed in f64 and rounded once, and laid out for this CPU's body
/// (`Isa::weight_index`).
pub fn transform_weights(g: &ConvGeometry, packed: &[f32]) -> Option<Vec<f32>> {
    let isa = Isa::best()?;
    if g.cin < isa.min_channels() {
        return None;
    }
    transform_weights_on(isa, g, packed)
}

/// [`transform_weights`] whatever the number of input channels: for benchmarks that compare
/// this CPU's body with the direct loop on layers [`transform_weights`] leaves there.
pub fn transform_weights_always(g: &ConvGeometry, packed: &[f32]) -> Option<Vec<f32>> {
    transform_weights_on(Isa::best()?, g, packed)
}

/// [`transform_weights`] laid out for the body of `isa`, for any number of input channels.
fn transform_weights_on(isa: Isa, g: &ConvGeometry, packed: &[f32]) -> Option<Vec<f32>> {
    let coutp = g.cout.div_ceil(BLOCK) * BLOCK;
    if g.kh != 3 || g.kw != 3 || packed.len() != coutp * g.taps() {
        return None;
    }
    let mut u = vec![0f32; POS * g.cin * coutp];
    // Each block of BLOCK output channels holds, per input channel, nine taps of BLOCK weights.
    for (block, kernels) in packed.chunks_exact(g.taps() * BLOCK).enumerate() {
        for (ci, k) in kernels.chunks_exact(9 * BLOCK).enumerate() {
            for c in 0..BLOCK {
                let w = |a: usize, b: usize| f64::from(k[(a * 3 + b) * BLOCK + c]);
                for (pos, (i, j)) in (0..4).flat_map(|i| (0..4).map(move |j| (i, j))).enumerate() {
                    let mut s = 0f64;
                    for (a, ga) in G[i].iter().enumerate() {
                        for (b, gb) in G[j].iter().enumerate() {
                            s += ga * w(a, b) * gb;
                        }
                    }
                    u[isa.weight_index(g, pos, ci, block * BLOCK + c)] = s as f32;
                }
            }
        }
    }
    Some(u)
}

/// The instruction sets with a body here, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Isa {
    /// Every set with a body, best first.
    const ALL: &[Isa] = &[
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2,
    ];

    /// Whether this CPU has the instructions.
    fn runs_here(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
        }
    }

    /// The best set this CPU has, if any.
    fn best() -> Option<Isa> {
        Isa::ALL.iter().copied().find(|isa| isa.runs_here())
    }

    /// The fewest input channels for which the body beats the direct loop: the transforms
    /// cost the same per channel whatever the products save.
    ///
    /// AVX-512: with its first layer (one input channel) here the edge model at batch 1 took
    /// 10.4–11.1 µs against 9.5–10.1 µs on the direct loop (`cascade-bench loop --model
    /// edge_fp32`, alternated, Xeon). AVX2 (AMD EPYC, Zen 3), where the direct loop runs
    /// one-channel layers at a third of its rate: Winograd over direct, pooled, 0.82–0.86 on
    /// the edge model's first layer, 0.89–0.99 on its second, 0.62–0.84 on the central
    /// model's (`cascade-bench kernels`, four runs).
    fn min_channels(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => 2,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => 1,
        }
    }

    /// Where the transformed weight of output channel `oc`, input channel `ci` and position
    /// `pos` lies in the body's layout: in the order its multiply reads them, so that the
    /// weights of one tile are contiguous. AVX-512, eight channels per tile:
    /// `[pos][ci][cout rounded up to BLOCK]`; AVX2, eight too: `[cout / 8][pos][ci][8]`.
    // Without a body (no x86_64) there is no `Isa` value and the match has no arms.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    fn weight_index(self, g: &ConvGeometry, pos: usize, ci: usize, oc: usize) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => (pos * g.cin + ci) * g.cout.div_ceil(BLOCK) * BLOCK + oc,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                let ob = avx2::OB;
                ((oc / ob * POS + pos) * g.cin + ci) * ob + oc % ob
            }
        }
    }
}

/// Whether this CPU runs [`convolve_pooled`].
pub fn available() -> bool {
    Isa::best().is_some()
}

/// The path [`convolve_pooled`] takes on this CPU (for benchmark reports).
pub fn kernel_path() -> &'static str {
    match Isa::best() {
        #[cfg(target_arch = "x86_64")]
        Some(Isa::Avx512) => "avx512f+fma",
        #[cfg(target_arch = "x86_64")]
        Some(Isa::Avx2) => "avx2+fma",
        None => "none",
    }
}

/// Pooled output tiles of `g`: rows and columns (odd trailing output rows and columns
/// dropped, as the pool drops them).
fn tiles(g: &ConvGeometry) -> (usize, usize) {
    (g.oh / 2, g.ow / 2)
}

/// The transformed input's layout: floats from one channel's tiles to the next (the tiles
/// rounded up to whole vectors), and from one position to the next.
///
/// The position stride has one vector more than the channels need: the transform stores
/// sixteen positions at once, and without the gap their addresses can be a multiple of 4 KiB
/// apart (the central model's second layer: 32 channels x 64 tiles x 4 bytes = 8 KiB), so that
/// all sixteen fall in one set of the L1 cache and evict each other.
fn strides(g: &ConvGeometry) -> (usize, usize) {
    let (th, tw) = tiles(g);
    let stride = (th * tw).div_ceil(LANES) * LANES;
    (stride, g.cin * stride + LANES)
}

/// Floats of the transformed-input buffer [`convolve_pooled`] needs for `g`.
pub fn transformed_len(g: &ConvGeometry) -> usize {
    POS * strides(g).1
}

/// The 3x3 convolution of one zero-padded image (`padded`, laid out as the direct loop's)
/// with the transformed kernels `u`, plus `bias`, max-pooled 2x2/s2 and, with `relu`, clamped
/// at zero, into `out` (`[cout][oh / 2][ow / 2]`). `transformed` is scratch of
/// [`transformed_len`] floats.
///
/// # Panics
/// If the CPU has no body here ([`available`]) or a buffer is shorter than `g` needs.
#[allow(clippy::too_many_arguments)]
pub fn convolve_pooled(
    g: &ConvGeometry,
    padded: &[f32],
    u: &[f32],
    bias: &[f32],
    relu: bool,
    transformed: &mut [f32],
    out: &mut [f32],
) {
    let Some(isa) = Isa::best() else {
        panic!("winograd: this CPU has neither AVX-512 nor AVX2 with FMA");
    };
    convolve_pooled_on(isa, g, padded, u, bias, relu, transformed, out);
}

/// [`convolve_pooled`] on the body for `isa`, which this CPU must run.
#[allow(clippy::too_many_arguments)]
fn convolve_pooled_on(
    isa: Isa,
    g: &ConvGeometry,
    padded: &[f32],
    u: &[f32],
    bias: &[f32],
    relu: bool,
    transformed: &mut [f32],
    out: &mut [f32],
) {
    assert!(isa.runs_here(), "winograd: this CPU lacks {isa:?}");
    let (th, tw) = tiles(g);
    let coutp = g.cout.div_ceil(BLOCK) * BLOCK;
    assert!(g.kh == 3 && g.kw == 3, "winograd: 3x3 kernels only");
    assert!(padded.len() >= g.cin * g.padded_h() * g.padded_w());
    assert!(u.len() == POS * g.cin * coutp && bias.len() >= coutp);
    assert!(transformed.len() >= transformed_len(g) && out.len() >= g.cout * th * tw);
    // Where no set has a body, `Isa` has no values and the match has no arms.
    #[cfg(not(target_arch = "x86_64"))]
    let _ = relu;
    match isa {
        // SAFETY: the CPU has the features the functions are compiled for (asserted above).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe {
            avx512::transform_input(g, padded, transformed);
            avx512::multiply_and_pool(g, transformed, u, bias, relu, out);
        },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe {
            avx2::transform_input(g, padded, transformed);
            avx2::multiply_and_pool(g, transformed, u, bias, relu, out);
        },
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

#[cfg(test)]
mod tests;
