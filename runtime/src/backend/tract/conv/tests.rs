//! The direct convolution's kernels and int8 edges against tract and each other.

#[cfg(target_arch = "x86_64")]
use super::kernels::convolve_avx2;
use super::kernels::{convolve, convolve_portable, pools_in_kernel};
use super::quantize::requantize;
use super::*;
use tract_onnx::tract_core::tract_linalg::Scaler;
use tract_onnx::tract_core::tract_linalg::mmm::RoundingPolicy;

#[test]
fn requantize_rounds_exactly_as_tracts_fixed_point_scaler() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // The edge model's two scales, powers of two (no multiplier), then random ones.
    let mut scales = vec![0.00523031f32 * 0.003921569 / 0.01079464, 0.25, 1.0, 4.0];
    scales.extend((0..40).map(|_| f32::from_bits(0x3000_0000 + (next() % 0x1000_0000) as u32)));
    for scale in scales {
        let scaler = Scaler::new(scale, RoundingPolicy::Even);
        // Ties included: multiples of a power of two near 1/scale land on halves.
        let mut accs: Vec<i32> = vec![0, 1, -1, 16_777_215, -16_777_215];
        accs.extend((0..2000).map(|_| (next() % 33_554_431) as i32 - 16_777_215));
        accs.extend((-300..300).map(|i| i * (1 << 12)));
        for acc in accs {
            assert_eq!(requantize(acc as f32, scale), scaler * acc, "acc {acc} scale {scale:e}");
        }
    }
}

/// An fp32 convolution of `geo` with fixed weights and bias of both signs, fused Relu.
fn fp32_conv(geo: ConvGeometry) -> DirectConv {
    let weights: Vec<f32> = (0..geo.cout * geo.taps()).map(|i| ((i * 37) % 17) as f32 / 8.0 - 1.0).collect();
    let bias: Vec<f32> = (0..geo.cout).map(|i| i as f32 / 4.0 - 1.0).collect();
    DirectConv::fp32(geo, &weights, &bias, true).unwrap()
}

#[test]
fn every_kernel_this_cpu_runs_matches_the_portable_one() {
    // Odd heights (a last row alone, or dropped by the pool), an even and an odd width.
    let geos = [
        ConvGeometry { cin: 3, cout: 11, h: 9, w: 37, kh: 3, kw: 2, pad_top: 1, pad_left: 0, oh: 9, ow: 36 },
        ConvGeometry { cin: 2, cout: 8, h: 7, w: 37, kh: 3, kw: 3, pad_top: 1, pad_left: 1, oh: 7, ow: 37 },
    ];
    let close = |a: &[f32], b: &[f32]| {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-5 * x.abs().max(1.0))
    };
    for geo in geos {
        let conv = fp32_conv(geo);
        let mut padded = vec![0f32; geo.cin * geo.padded_h() * geo.padded_w()];
        for (i, v) in padded.iter_mut().enumerate() {
            *v = ((i * 13) % 29) as f32 / 16.0 - 0.9;
        }
        let size = geo.cout * geo.oh * geo.ow;
        let mut expected = vec![0f32; size];
        convolve_portable(&geo, &padded, &conv.packed, &conv.bias, true, &mut expected);
        let mut got = vec![0f32; size];
        convolve(&geo, &padded, &conv.packed, &conv.bias, true, false, &mut got);
        assert!(close(&expected, &got), "{geo:?}");
        // Pooled as stored (AVX-512), the same as pooling after.
        if pools_in_kernel() {
            let pooled_expected =
                crate::backend::tract::pool::pool(&expected, &[1, geo.cout, geo.oh, geo.ow]).0;
            let mut pooled = vec![f32::NAN; pooled_expected.len()];
            convolve(&geo, &padded, &conv.packed, &conv.bias, true, true, &mut pooled);
            assert!(close(&pooled_expected, &pooled), "pooled {geo:?}");
        }
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            let mut avx2 = vec![0f32; size];
            // SAFETY: the CPU has the features.
            unsafe { convolve_avx2(&geo, &padded, &conv.packed, &conv.bias, true, &mut avx2) };
            assert!(close(&expected, &avx2), "avx2 {geo:?}");
        }
        assert!(expected.iter().any(|&v| v > 0.0) && expected.iter().all(|&v| v >= 0.0));
    }
}

#[test]
fn a_state_that_ran_other_input_answers_as_a_fresh_one() {
    let geo =
        ConvGeometry { cin: 3, cout: 11, h: 9, w: 37, kh: 3, kw: 3, pad_top: 1, pad_left: 1, oh: 9, ow: 37 };
    let input = |seed: usize| {
        let data = (0..2 * geo.cin * geo.h * geo.w).map(|i| ((i * seed) % 31) as f32 / 8.0 - 2.0).collect();
        Tensor::from(ArrayD::from_shape_vec(IxDyn(&[2, geo.cin, geo.h, geo.w]), data).unwrap()).into_tvalue()
    };
    let ctx = EvalContext::out_of_plan();
    for pool in [false, true] {
        let mut conv = fp32_conv(geo);
        if pool {
            conv.fuse_pool();
        }
        let mut state = ConvState::default();
        state.eval(&ctx, &conv, tvec!(input(7))).unwrap();
        let reused = state.eval(&ctx, &conv, tvec!(input(13))).unwrap();
        let fresh = EvalOp::eval(&conv, &ctx, tvec!(input(13))).unwrap();
        assert_eq!(*reused[0], *fresh[0], "pool {pool}");
        assert_ne!(*reused[0], *EvalOp::eval(&conv, &ctx, tvec!(input(7))).unwrap()[0]);
    }
}

#[test]
fn int8_refuses_weights_whose_sums_f32_cannot_hold_exactly() {
    let geo =
        ConvGeometry { cin: 600, cout: 1, h: 1, w: 1, kh: 1, kw: 1, pad_top: 0, pad_left: 0, oh: 1, ow: 1 };
    let requant = Requant { x_zero: 0, w_zero: 0, y_zero: 0, mult: 0.01, lo: 0, hi: 255 };
    let q = Int8Output { requant, output: DatumType::U8, channel_mults: None };
    // 600 * 128 * 255 > 2^24; 400 * 128 * 255 < 2^24.
    assert!(DirectConv::int8(geo, &[-128; 600], &[0], (0, 255), q.clone()).is_none());
    let geo = ConvGeometry { cin: 400, ..geo };
    assert!(DirectConv::int8(geo, &[-128; 400], &[0], (0, 255), q).is_some());
}

#[test]
fn winograd_matches_the_direct_loop_then_pooled() {
    if !winograd::available() {
        return;
    }
    // A 3x3 convolution of `cin` to `cout` channels on `h` x `w`, `pad` zeros around.
    let g3 = |cin, cout, h, w, pad| ConvGeometry {
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
    };
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
    for geo in geos {
        for relu in [false, true] {
            let mut conv = DirectConv { relu, ..fp32_conv(geo) };
            conv.fuse_pool();
            let mut padded = vec![0f32; geo.cin * geo.padded_h() * geo.padded_w()];
            for (i, v) in padded.iter_mut().enumerate() {
                *v = ((i * 13) % 29) as f32 / 16.0 - 0.9;
            }
            let full = geo.cout * geo.oh * geo.ow;
            let mut direct = vec![0f32; full];
            convolve_portable(&geo, &padded, &conv.packed, &conv.bias, relu, &mut direct);
            let expected = crate::backend::tract::pool::pool(&direct, &[1, geo.cout, geo.oh, geo.ow]).0;
            let mut transformed = vec![f32::NAN; winograd::transformed_len(&geo)];
            let mut got = vec![f32::NAN; expected.len()];
            let u = conv.winograd.as_deref().unwrap();
            winograd::convolve_pooled(&geo, &padded, u, &conv.bias, relu, &mut transformed, &mut got);
            // Re-associated sums: off by rounding only, which grows with the number of terms
            // (each at most 1 in magnitude here).
            let tolerance = 1e-7 * geo.taps() as f32;
            let worst = expected.iter().zip(&got).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(worst <= tolerance, "{geo:?} relu {relu}: off by {worst} (tolerance {tolerance})");
            assert!(got.iter().all(|v| v.is_finite()), "{geo:?}: a value left unwritten");
        }
    }
}

#[test]
fn winograd_takes_pooled_fp32_3x3_kernels_of_two_channels_or_more() {
    let geo =
        ConvGeometry { cin: 2, cout: 4, h: 8, w: 8, kh: 3, kw: 3, pad_top: 1, pad_left: 1, oh: 8, ow: 8 };
    let pooled = |geo| {
        let mut conv = fp32_conv(geo);
        conv.fuse_pool();
        conv.winograd.is_some()
    };
    assert!(fp32_conv(geo).winograd.is_none(), "not pooled");
    assert_eq!(pooled(geo), winograd::available());
    assert!(!pooled(ConvGeometry { cin: 1, ..geo }));
    assert!(!pooled(ConvGeometry { kw: 2, ow: 7, ..geo }));
    let requant = Requant { x_zero: 0, w_zero: 0, y_zero: 0, mult: 0.01, lo: 0, hi: 255 };
    let q = Int8Output { requant, output: DatumType::U8, channel_mults: None };
    let mut int8 = DirectConv::int8(geo, &[1; 72], &[0; 4], (0, 255), q).unwrap();
    int8.fuse_pool();
    assert!(int8.winograd.is_none(), "int8 must stay exact");
}
