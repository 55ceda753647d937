//! The direct convolution op: its int8 edges against tract, its buffers, what it fuses.
//! (The kernels' own tests are in `kernels/`.)

use super::*;
use cascade_kernels::quantize::requantize;
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
fn winograd_takes_pooled_fp32_3x3_kernels_of_enough_channels() {
    // 32 input channels: enough on every body (`cascade_kernels::winograd::transform_weights`).
    let geo =
        ConvGeometry { cin: 32, cout: 4, h: 8, w: 8, kh: 3, kw: 3, pad_top: 1, pad_left: 1, oh: 8, ow: 8 };
    let pooled = |geo| {
        let mut conv = fp32_conv(geo);
        conv.fuse_pool();
        conv.winograd.is_some()
    };
    assert!(fp32_conv(geo).winograd.is_none(), "not pooled");
    assert_eq!(pooled(geo), winograd::available());
    assert!(!pooled(ConvGeometry { kw: 2, ow: 7, ..geo }));
    let requant = Requant { x_zero: 0, w_zero: 0, y_zero: 0, mult: 0.01, lo: 0, hi: 255 };
    let q = Int8Output { requant, output: DatumType::U8, channel_mults: None };
    let mut int8 = DirectConv::int8(geo, &[1; 4 * 32 * 9], &[0; 4], (0, 255), q).unwrap();
    int8.fuse_pool();
    assert!(int8.winograd.is_none(), "int8 must stay exact");
}
