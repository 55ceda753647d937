//! Every f32 kernel this CPU runs against the portable one.

#[cfg(target_arch = "x86_64")]
use super::convolve_avx2;
use super::{convolve, convolve_portable, pack, pad_bias, pools_in_kernel};
use crate::ConvGeometry;
use crate::pool::pool;

/// Weights and bias of `geo`, fixed values of both signs, packed.
pub(crate) fn packed_weights(geo: &ConvGeometry) -> (Vec<f32>, Vec<f32>) {
    let weights: Vec<f32> = (0..geo.cout * geo.taps()).map(|i| ((i * 37) % 17) as f32 / 8.0 - 1.0).collect();
    let bias: Vec<f32> = (0..geo.cout).map(|i| i as f32 / 4.0 - 1.0).collect();
    (pack(geo, &weights), pad_bias(geo, &bias))
}

/// A zero-padded input of `geo` with fixed values of both signs.
pub(crate) fn padded_input(geo: &ConvGeometry) -> Vec<f32> {
    (0..geo.cin * geo.padded_h() * geo.padded_w()).map(|i| ((i * 13) % 29) as f32 / 16.0 - 0.9).collect()
}

#[test]
fn every_kernel_this_cpu_runs_matches_the_portable_one() {
    // Odd heights (a last row alone, or dropped by the pool), even and odd widths, channels
    // that fill no whole block.
    let geos = [
        ConvGeometry { cin: 3, cout: 11, h: 9, w: 37, kh: 3, kw: 2, pad_top: 1, pad_left: 0, oh: 9, ow: 36 },
        ConvGeometry { cin: 2, cout: 8, h: 7, w: 37, kh: 3, kw: 3, pad_top: 1, pad_left: 1, oh: 7, ow: 37 },
        // The kernel widths the AVX2 loop is specialised for besides 3.
        ConvGeometry { cin: 4, cout: 5, h: 6, w: 10, kh: 1, kw: 1, pad_top: 0, pad_left: 0, oh: 6, ow: 10 },
        ConvGeometry {
            cin: 1,
            cout: 16,
            h: 12,
            w: 21,
            kh: 5,
            kw: 5,
            pad_top: 2,
            pad_left: 2,
            oh: 12,
            ow: 21,
        },
    ];
    let close = |a: &[f32], b: &[f32]| {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-5 * x.abs().max(1.0))
    };
    for geo in geos {
        let (packed, bias) = packed_weights(&geo);
        let padded = padded_input(&geo);
        let size = geo.cout * geo.oh * geo.ow;
        let mut expected = vec![0f32; size];
        convolve_portable(&geo, &padded, &packed, &bias, true, &mut expected);
        let mut got = vec![0f32; size];
        convolve(&geo, &padded, &packed, &bias, true, false, &mut got);
        assert!(close(&expected, &got), "{geo:?}");
        // Pooled as stored (AVX-512, AVX2), the same as pooling after.
        if pools_in_kernel() {
            let pooled_expected = pool(&expected, &[1, geo.cout, geo.oh, geo.ow]).0;
            let mut pooled = vec![f32::NAN; pooled_expected.len()];
            convolve(&geo, &padded, &packed, &bias, true, true, &mut pooled);
            assert!(close(&pooled_expected, &pooled), "pooled {geo:?}");
        }
        // The AVX2 kernel also where AVX-512 takes precedence.
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            let mut avx2 = vec![0f32; size];
            // SAFETY: the CPU has the features.
            unsafe { convolve_avx2(&geo, &padded, &packed, &bias, true, false, &mut avx2) };
            assert!(close(&expected, &avx2), "avx2 {geo:?}");
            let pooled_expected = pool(&expected, &[1, geo.cout, geo.oh, geo.ow]).0;
            let mut pooled = vec![f32::NAN; pooled_expected.len()];
            // SAFETY: as above.
            unsafe { convolve_avx2(&geo, &padded, &packed, &bias, true, true, &mut pooled) };
            assert!(close(&pooled_expected, &pooled), "avx2 pooled {geo:?}");
        }
        assert!(expected.iter().any(|&v| v > 0.0) && expected.iter().all(|&v| v >= 0.0));
    }
}
