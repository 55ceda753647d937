//! The CPU kernels of Cascade's tract backend.
//!
//! tract 0.23 runs the small CNNs an edge node serves through im2col and a general matrix
//! multiply, and pools through a per-pixel loop; the backend swaps those nodes for ops of its
//! own (`runtime/src/backend/tract/rewrite.rs`), and this crate is their arithmetic, on plain
//! slices and with no dependency:
//!
//! - [`direct`]: the fp32 direct convolution (AVX-512, AVX2+FMA, portable), also exact for
//!   int8 held in f32;
//! - [`winograd`]: F(2x2, 3x3) for pooled fp32 3x3 convolutions, on AVX-512 and AVX2;
//! - [`intconv`]: the int8 convolution on integer dot-product instructions (AVX-512 VNNI,
//!   AVX-VNNI, aarch64 `sdot`) or AVX2's 16-bit multiply-add, bit for bit the f32 loop's sums;
//! - [`quantize`]: QuantizeLinear and QLinearConv's requantisation, as tract computes them;
//! - [`pool`]: the 2x2 stride-2 max pool;
//! - [`peak`]: the multiply-adds per nanosecond those kernels' instructions allow at best,
//!   for benchmarks.
//!
//! Every kernel picks the widest instructions this CPU has at run time and keeps a portable
//! path that the unit tests compare it against. A crate of its own so that the test profile
//! can compile it optimised (`[profile.dev.package.cascade-kernels]` in the workspace's
//! `Cargo.toml`): the tests run the models on these kernels, and the rest of the runtime
//! stays quick to rebuild.

pub mod direct;
mod geometry;
pub mod intconv;
pub mod peak;
pub mod pool;
pub mod quantize;
pub mod winograd;

pub use geometry::ConvGeometry;

/// `buf` as `len` elements, filled with `fill` when its length changes and reused as it is
/// otherwise. Sound for buffers whose readers either read only what was written in the same
/// run or rely on `fill` where nothing writes (a padding border): a buffer belongs to one
/// convolution, whose padding value never changes.
pub fn sized<T: Copy>(buf: &mut Vec<T>, len: usize, fill: T) -> &mut [T] {
    if buf.len() != len {
        buf.clear();
        buf.resize(len, fill);
    }
    buf
}

/// Copies `src` into `dst`, of the same length. An input row is tens of elements, and a
/// kernel's partial tile a few, where a call to `memcpy` costs more than the copy: up to 64
/// elements move as two overlapping fixed-size chunks, each a few loads and stores.
#[inline(always)]
pub fn copy_row<T: Copy>(dst: &mut [T], src: &[T]) {
    #[inline(always)]
    fn ends<T: Copy, const K: usize>(dst: &mut [T], src: &[T]) {
        let n = src.len();
        dst[..K].copy_from_slice(&src[..K]);
        dst[n - K..][..K].copy_from_slice(&src[n - K..][..K]);
    }
    assert_eq!(dst.len(), src.len(), "rows of one length");
    match src.len() {
        32..=64 => ends::<T, 32>(dst, src),
        16..=31 => ends::<T, 16>(dst, src),
        8..=15 => ends::<T, 8>(dst, src),
        4..=7 => ends::<T, 4>(dst, src),
        2..=3 => ends::<T, 2>(dst, src),
        1 => dst[0] = src[0],
        _ => dst.copy_from_slice(src),
    }
}

/// Which vector path each kernel of this crate takes on this CPU (for benchmark reports,
/// which print it beside every figure).
pub fn kernel_paths() -> Vec<(&'static str, &'static str)> {
    #[cfg(target_arch = "x86_64")]
    let wide = if is_x86_feature_detected!("avx512f") {
        "avx512f"
    } else if is_x86_feature_detected!("avx2") {
        "avx2"
    } else {
        "portable"
    };
    #[cfg(not(target_arch = "x86_64"))]
    let wide = "portable";
    vec![
        ("direct_conv", direct::kernel_path()),
        ("winograd", winograd::kernel_path()),
        ("int8_conv", intconv::kernel_path()),
        ("quantize", wide),
        ("requantize", wide),
    ]
}

#[cfg(test)]
mod tests {
    use super::copy_row;

    #[test]
    fn short_rows_copy_whole_at_every_length() {
        for len in 0..=80 {
            let src: Vec<u8> = (0..len).map(|i| (i * 7 + 1) as u8).collect();
            let mut dst = vec![0u8; len];
            copy_row(&mut dst, &src);
            assert_eq!(dst, src, "length {len}");
            let src: Vec<f32> = src.iter().map(|&b| f32::from(b) - 100.5).collect();
            let mut dst = vec![0f32; len];
            copy_row(&mut dst, &src);
            assert_eq!(dst, src, "length {len}");
        }
    }
}
