//! Tests of the graph rewrites in `rewrite.rs`: rewritten pools and convolutions compute what
//! plain tract computes (bit-identical in int8), and every pool and convolution of the
//! reference models is rewritten. In a file of their own because they outweigh the rewrites.

use super::*;
use crate::reference::{ReferenceModel, default_models_dir};
use tract_onnx::prelude::{InferenceFact, InferenceModelExt, IntoRunnable};

/// The reference model as the backend hands it to the rewrites: QDQ folded, decluttered.
fn decluttered(key: ReferenceModel) -> TypedModel {
    use crate::backend::tract::onnx::{read_proto, tract_model};
    let bytes = std::fs::read(key.path(&default_models_dir())).unwrap();
    let mut proto = read_proto(key.key(), &bytes).unwrap();
    let folded = super::super::qdq::fold_qdq(&mut proto);
    // The QDQ model's two convolutions, two pools and flatten; the QOperator model's
    // flatten (between a dequantise and a quantise with the same parameters).
    let expected = match key {
        ReferenceModel::EdgeInt8Qdq => 5,
        ReferenceModel::EdgeInt8 => 1,
        _ => 0,
    };
    assert_eq!(folded, expected, "{}", key.key());
    let model = tract_model(key.key(), &proto, "tract").unwrap();
    model
        .with_input_fact(0, InferenceFact::dt_shape(DatumType::F32, [1usize, 1, 28, 28]))
        .unwrap()
        .into_typed()
        .unwrap()
        .into_decluttered()
        .unwrap()
}

fn pools(model: &TypedModel) -> (Vec<Vec<usize>>, usize) {
    let tract_pools = model
        .nodes()
        .iter()
        .filter_map(|n| n.op_as::<MaxPool>())
        .map(|p| p.pool_spec.kernel_shape.to_vec())
        .collect();
    (tract_pools, model.nodes().iter().filter(|n| n.op_is::<MaxPool2x2>()).count())
}

#[test]
fn every_2x2_pool_of_the_reference_models_becomes_the_fast_op() {
    for key in ReferenceModel::ALL {
        let mut model = decluttered(key);
        assert_eq!(pools(&model), (vec![vec![2, 2], vec![2, 2]], 0), "{}", key.key());
        assert_eq!(rewrite_pools(&mut model).unwrap(), 2, "{}", key.key());
        assert_eq!(pools(&model), (vec![], 2), "{}", key.key());
    }
}

/// Output before the rewrite, output after it, and the pools left after it.
type PoolRun = (Vec<f32>, Vec<f32>, (Vec<Vec<usize>>, usize));

/// A one-pool model on an input of `shape`, its output before and after the rewrite,
/// and the pools left after it.
fn pool_before_after(shape: [usize; 4], kernel: [usize; 2], strides: [usize; 2]) -> PoolRun {
    use tract_onnx::prelude::{Tensor as TTensor, tvec};
    use tract_onnx::tract_core::internal::{SpecialOps, TypedFact};
    let mut model = TypedModel::default();
    let source = model.add_source("x", TypedFact::dt_shape(DatumType::F32, &shape[..])).unwrap();
    let pool = MaxPool {
        pool_spec: PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: kernel.into_iter().collect(),
            padding: PaddingSpec::Valid,
            dilations: None,
            strides: Some(strides.into_iter().collect()),
            input_channels: shape[1],
            output_channels: shape[1],
        },
        with_index_outputs: None,
    };
    let out = model.wire_node("pool", pool, &[source]).unwrap();
    model.select_output_outlets(&out).unwrap();
    let n: usize = shape.iter().product();
    // Distinct values in a scrambled order, so every window has a unique max.
    let values: Vec<f32> = (0..n).map(|i| ((i * 7919) % n) as f32 - n as f32 / 3.0).collect();
    let input = TTensor::from_shape(&shape, &values).unwrap();
    let run = |m: TypedModel| {
        let plan = m.into_optimized().unwrap().into_runnable().unwrap();
        plan.run(tvec!(input.clone().into())).unwrap()[0]
            .try_as_plain_ram()
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec()
    };
    let before = run(model.clone());
    rewrite_pools(&mut model).unwrap();
    let left = pools(&model);
    (before, run(model), left)
}

#[test]
fn rewritten_pools_compute_exactly_what_tract_computes() {
    // Fast op, odd sizes included (the last row and column are dropped).
    let (before, after, left) = pool_before_after([2, 3, 7, 9], [2, 2], [2, 2]);
    assert_eq!((before, left), (after, (vec![], 1)));
    // Split into rows then columns: a 3x2 window with strides 2 and 1.
    let (before, after, left) = pool_before_after([1, 2, 9, 8], [3, 2], [2, 1]);
    assert_eq!((before, left), (after, (vec![vec![3, 1], vec![1, 2]], 0)));
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn unit(&mut self) -> f32 {
        (self.next() % 20001) as f32 / 10000.0 - 1.0
    }
}

/// One convolution case: input shape, kernel, padding (top, left, bottom, right).
#[derive(Debug, Clone, Copy)]
struct Case {
    n: usize,
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    pad: [usize; 4],
}

fn cases() -> Vec<Case> {
    let mut rng = Rng(0x5eed_c0ff_ee00_0001);
    let mut cases = vec![
        // The reference models' shapes, batch 1 and 3.
        Case { n: 1, cin: 1, cout: 8, h: 28, w: 28, kh: 3, kw: 3, pad: [1; 4] },
        Case { n: 3, cin: 8, cout: 16, h: 14, w: 14, kh: 3, kw: 3, pad: [1; 4] },
        Case { n: 2, cin: 16, cout: 32, h: 28, w: 28, kh: 3, kw: 3, pad: [1; 4] },
        // One column, no padding, 1x1.
        Case { n: 2, cin: 3, cout: 5, h: 4, w: 1, kh: 1, kw: 1, pad: [0; 4] },
    ];
    for _ in 0..12 {
        let (kh, kw) = (1 + rng.below(5), 1 + rng.below(5));
        let pad = [rng.below(3), rng.below(3), rng.below(3), rng.below(3)];
        cases.push(Case {
            n: 1 + rng.below(3),
            cin: 1 + rng.below(6),
            cout: 1 + rng.below(19),
            h: kh + rng.below(20),
            w: kw + rng.below(40),
            kh,
            kw,
            pad,
        });
    }
    cases
}

fn pool_2x2(channels: usize) -> MaxPool {
    MaxPool {
        pool_spec: PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: [2, 2].into_iter().collect(),
            padding: PaddingSpec::Valid,
            dilations: None,
            strides: Some([2, 2].into_iter().collect()),
            input_channels: channels,
            output_channels: channels,
        },
        with_index_outputs: None,
    }
}

fn conv_op(c: &Case, q_params: Option<DatumType>) -> Conv {
    Conv {
        pool_spec: PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: [c.kh, c.kw].into_iter().collect(),
            padding: PaddingSpec::Explicit(
                [c.pad[0], c.pad[1]].into_iter().collect(),
                [c.pad[2], c.pad[3]].into_iter().collect(),
            ),
            dilations: None,
            strides: None,
            input_channels: c.cin,
            output_channels: c.cout,
        },
        kernel_fmt: KernelFormat::OIHW,
        group: 1,
        q_params,
    }
}

/// Runs `model` optimised, before and after [`rewrite_convs`]; returns both outputs as
/// raw bytes' worth of `T`, and how many convolutions were rewritten.
fn conv_before_after<T: tract_onnx::prelude::Datum + Copy>(
    mut model: TypedModel,
    input: TTensor,
) -> (Vec<T>, Vec<T>, usize, TypedModel) {
    use tract_onnx::prelude::tvec;
    let run = |m: TypedModel| {
        let plan = m.into_optimized().unwrap().into_runnable().unwrap();
        plan.run(tvec!(input.clone().into())).unwrap()[0]
            .try_as_plain_ram()
            .unwrap()
            .as_slice::<T>()
            .unwrap()
            .to_vec()
    };
    let before = run(model.clone());
    let rewritten = rewrite_convs(&mut model).unwrap();
    (before, run(model.clone()), rewritten, model)
}

#[test]
fn direct_fp32_convolutions_match_tract_with_and_without_relu() {
    use tract_onnx::tract_core::internal::{SpecialOps, TypedFact};
    use tract_onnx::tract_core::ops::math::max;
    let mut rng = Rng(7);
    for (ix, c) in cases().into_iter().enumerate() {
        let relu = ix % 2 == 0;
        let mut model = TypedModel::default();
        let shape = [c.n, c.cin, c.h, c.w];
        let x = model.add_source("x", TypedFact::dt_shape(DatumType::F32, &shape[..])).unwrap();
        let wv: Vec<f32> = (0..c.cout * c.cin * c.kh * c.kw).map(|_| rng.unit()).collect();
        let bv: Vec<f32> = (0..c.cout).map(|_| rng.unit()).collect();
        let w =
            model.add_const("w", TTensor::from_shape(&[c.cout, c.cin, c.kh, c.kw], &wv).unwrap()).unwrap();
        let b = model.add_const("b", TTensor::from_shape(&[c.cout], &bv).unwrap()).unwrap();
        let mut out = model.wire_node("conv", conv_op(&c, None), &[x, w, b]).unwrap();
        if relu {
            let zero = model.add_const("zero", TTensor::from_shape(&[1, 1, 1, 1], &[0f32]).unwrap()).unwrap();
            out = model.wire_node("relu", max(), &[out[0], zero]).unwrap();
        }
        // tract's own pool panics on an empty output, so the reference needs 2x2 at least.
        let pool = ix % 3 != 1 && c.h + c.pad[0] + c.pad[2] > c.kh && c.w + c.pad[1] + c.pad[3] > c.kw;
        if pool {
            out = model.wire_node("pool", pool_2x2(c.cout), &out).unwrap();
        }
        model.select_output_outlets(&out).unwrap();
        let xv: Vec<f32> = (0..shape.iter().product()).map(|_| rng.unit()).collect();
        let input = TTensor::from_shape(&shape, &xv).unwrap();
        let (before, after, rewritten, model) = conv_before_after::<f32>(model, input);
        assert_eq!(rewritten, 1, "{c:?}");
        assert_eq!(before.len(), after.len(), "{c:?}");
        for (a, b) in before.iter().zip(&after) {
            assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "{c:?}: {a} vs {b}");
        }
        if relu {
            assert!(after.iter().all(|&v| v >= 0.0), "{c:?}");
        }
        let fused =
            model.nodes().iter().filter_map(|n| n.op_as::<DirectConv>()).next().map(|c| (c.relu, c.pool));
        assert_eq!(fused, Some((relu, pool)), "{c:?}");
    }
}

#[test]
fn direct_int8_convolutions_are_bit_identical_to_tract() {
    use tract_onnx::tract_core::internal::{SpecialOps, TypedFact};
    let mut rng = Rng(11);
    for (ix, c) in cases().into_iter().enumerate() {
        let mut model = TypedModel::default();
        let shape = [c.n, c.cin, c.h, c.w];
        let x = model.add_source("x", TypedFact::dt_shape(DatumType::U8, &shape[..])).unwrap();
        let wv: Vec<i8> = (0..c.cout * c.cin * c.kh * c.kw).map(|_| rng.next() as i8).collect();
        let bv: Vec<i32> = (0..c.cout).map(|_| rng.below(40_001) as i32 - 20_000).collect();
        let scalar_i32 = |v: i32| TTensor::from(v);
        let scalar_f32 = |v: f32| TTensor::from(v);
        let x_zero = rng.below(256) as i32;
        // The edge model's scales, then random ones.
        let (x_scale, k_scale, y_scale) = if c.cin == 1 {
            (0.003921569, 0.00523031, 0.01079464)
        } else {
            (0.001 + rng.unit().abs() * 0.02, 0.001 + rng.unit().abs() * 0.01, 0.01 + rng.unit().abs())
        };
        let consts = [
            TTensor::from_shape(&[c.cout, c.cin, c.kh, c.kw], &wv).unwrap(),
            TTensor::from_shape(&[c.cout], &bv).unwrap(),
            scalar_i32(x_zero),
            scalar_f32(x_scale),
            scalar_i32(0),
            scalar_f32(k_scale),
            scalar_i32(rng.below(256) as i32),
            scalar_f32(y_scale),
        ];
        let mut inputs = vec![x];
        for (i, t) in consts.into_iter().enumerate() {
            inputs.push(model.add_const(format!("c{i}"), t).unwrap());
        }
        let mut out = model.wire_node("conv", conv_op(&c, Some(DatumType::U8)), &inputs).unwrap();
        let pool = ix % 2 == 0 && c.h + c.pad[0] + c.pad[2] > c.kh && c.w + c.pad[1] + c.pad[3] > c.kw;
        if pool {
            out = model.wire_node("pool", pool_2x2(c.cout), &out).unwrap();
        }
        model.select_output_outlets(&out).unwrap();
        let xv: Vec<u8> = (0..shape.iter().product()).map(|_| rng.next() as u8).collect();
        let input = TTensor::from_shape(&shape, &xv).unwrap();
        let (before, after, rewritten, model) = conv_before_after::<u8>(model, input);
        assert_eq!(rewritten, 1, "{c:?}");
        let fused = model.nodes().iter().filter_map(|n| n.op_as::<DirectConv>()).next().map(|c| c.pool);
        assert_eq!(fused, Some(pool), "{c:?}");
        assert_eq!(before, after, "{c:?}");
    }
}

#[test]
fn every_convolution_of_the_reference_models_runs_direct() {
    for key in ReferenceModel::ALL {
        let mut model = decluttered(key);
        let convs = model.nodes().iter().filter(|n| n.op_is::<Conv>()).count();
        assert_eq!(rewrite_convs(&mut model).unwrap(), convs, "{}", key.key());
        let left = model.nodes().iter().filter(|n| n.op_is::<Conv>()).count();
        let direct: Vec<bool> =
            model.nodes().iter().filter_map(|n| n.op_as::<DirectConv>()).map(|c| c.relu).collect();
        assert_eq!((left, direct.len()), (0, convs), "{}", key.key());
        // fp32 convolutions take their Relu along; int8 ones clamp in requantisation.
        let fp32 = !matches!(key, ReferenceModel::EdgeInt8 | ReferenceModel::EdgeInt8Qdq);
        assert!(direct.iter().all(|&relu| relu == fp32), "{}", key.key());
        // The int8 model's input QuantizeLinear is fused into its first convolution.
        let quantizing = model
            .nodes()
            .iter()
            .filter_map(|n| n.op_as::<DirectConv>())
            .filter(|c| c.quantize_input.is_some())
            .count();
        assert_eq!(quantizing, usize::from(!fp32), "{}", key.key());
        // No table follows any of them: the dequantise/quantise pair around the int8
        // models' flatten (same parameters, which tract would run as an identity
        // LookupTable) is folded away before tract sees it.
        let looking_up = model
            .nodes()
            .iter()
            .filter_map(|n| n.op_as::<DirectConv>())
            .filter(|c| c.lookup.is_some())
            .count();
        assert_eq!(looking_up, 0, "{}", key.key());
        // Per-channel weights: one multiplier per output channel, only in the QDQ model.
        let per_channel = model
            .nodes()
            .iter()
            .filter_map(|n| n.op_as::<DirectConv>())
            .filter(|c| c.int8.as_ref().is_some_and(|q| q.channel_mults.is_some()))
            .count();
        assert_eq!(per_channel, if key == ReferenceModel::EdgeInt8Qdq { 2 } else { 0 }, "{}", key.key());
        // Every 2x2 pool follows a convolution, and is fused into it.
        let pooled = model.nodes().iter().filter_map(|n| n.op_as::<DirectConv>()).filter(|c| c.pool).count();
        assert_eq!((pooled, pools(&model)), (2, (vec![], 0)), "{}", key.key());
    }
}
