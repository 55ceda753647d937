//! Winograd against the direct loop, pooled after.

use super::{Isa, convolve_pooled_on, transform_weights_on, transformed_len};
use crate::ConvGeometry;
use crate::direct::convolve_portable;
use crate::direct::tests::{packed_weights, padded_input};
use crate::pool::pool;

/// A 3x3 convolution of `cin` to `cout` channels on `h` x `w`, `pad` zeros around.
fn g3(cin: usize, cout: usize, h: usize, w: usize, pad: usize) -> ConvGeometry {
    ConvGeometry {
        cin,
        cout,
        h,
        w,
        kh: 3,
        kw: 3,
        pad_top: pad,
        pad_left: pad,
        oh: h + 2 * pad - 2,
        ow: w + 2 * pad - 2,
    }
}

#[test]
fn winograd_matches_the_direct_loop_then_pooled() {
    // The two central layers, two input channels, odd output sizes (a row and a column the
    // pool drops), a tile row wider than a vector, channels not a whole block, no padding.
    let geos = [
        g3(16, 32, 28, 28, 1),
        g3(32, 32, 14, 14, 1),
        g3(2, 8, 28, 28, 1),
        g3(3, 11, 9, 13, 1),
        g3(2, 5, 6, 70, 1),
        g3(4, 9, 12, 12, 0),
    ];
    // Every body this CPU runs (AVX2 also where AVX-512 takes precedence).
    for &isa in Isa::ALL.iter().filter(|isa| isa.runs_here()) {
        for geo in geos {
            for relu in [false, true] {
                let (packed, bias) = packed_weights(&geo);
                let u = transform_weights_on(isa, &geo, &packed).unwrap();
                let padded = padded_input(&geo);
                let full = geo.cout * geo.oh * geo.ow;
                let mut direct = vec![0f32; full];
                convolve_portable(&geo, &padded, &packed, &bias, relu, &mut direct);
                let expected = pool(&direct, &[1, geo.cout, geo.oh, geo.ow]).0;
                let mut transformed = vec![f32::NAN; transformed_len(&geo)];
                let mut got = vec![f32::NAN; expected.len()];
                convolve_pooled_on(isa, &geo, &padded, &u, &bias, relu, &mut transformed, &mut got);
                // Re-associated sums: off by rounding only, which grows with the number of terms
                // (each at most 1 in magnitude here).
                let tolerance = 1e-7 * geo.taps() as f32;
                let worst = expected.iter().zip(&got).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
                assert!(
                    worst <= tolerance,
                    "{isa:?} {geo:?} relu {relu}: off by {worst} (tolerance {tolerance})"
                );
                assert!(got.iter().all(|v| v.is_finite()), "{isa:?} {geo:?}: a value left unwritten");
            }
        }
    }
}
