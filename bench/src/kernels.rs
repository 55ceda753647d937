//! The convolution kernels alone, on the reference models' layer shapes: how fast the direct
//! loop is on this CPU (multiply-adds per nanosecond), and Winograd against the direct loop
//! on each pooled 3x3 layer, alternated in one process, whether or not the backend takes
//! Winograd for that layer (`cascade_kernels::winograd::transform_weights` decides by input
//! channels; these figures are its evidence).
//!
//! Figures, per layer (`edge.conv1` ... `central.conv3`):
//! `kernels.<layer>.direct.median_us`, `kernels.<layer>.direct.macs_per_ns` (unpooled),
//! `kernels.<layer>.direct_pooled.median_us`, `kernels.<layer>.winograd.median_us` and
//! `kernels.ratio_winograd_over_direct.<layer>` (both pooled, where this CPU has a Winograd
//! body); and the same layer on int8 (`cascade_kernels::intconv`, where this CPU has an
//! integer body), pooled: `kernels.<layer>.int8_pooled.median_us`, and
//! `kernels.ratio_int8_over_fp32.<layer>` against the pooled fp32 kernel the backend takes
//! for the layer (Winograd where `transform_weights` takes it, else the direct loop).
//!
//! Then the ceiling both rest on (`cascade_kernels::peak`): the multiply-adds per ns of the
//! fp32 FMA and of the int8 instruction sequence, on registers alone, alternated:
//! `kernels.peak.fp32.macs_per_ns`, `kernels.peak.int8.macs_per_ns` and
//! `kernels.ratio_peak_int8_over_fp32` (time per multiply-add, int8 over fp32: the least
//! int8 over fp32 any kernel on these instructions can reach, before Winograd's savings).

use std::time::Instant;

use cascade_kernels::intconv::{IntConv, IntScratch, Packed};
use cascade_kernels::{ConvGeometry, direct, peak, winograd};
use edge_node::figures::{Figures, median};

/// The reference models' convolutions: 3x3, padded by one, each followed by a 2x2 pool
/// in the model except `central.conv1` (the pool runs here on every layer all the same).
const LAYERS: [(&str, usize, usize, usize); 5] = [
    ("edge.conv1", 1, 8, 28),
    ("edge.conv2", 8, 16, 14),
    ("central.conv1", 1, 16, 28),
    ("central.conv2", 16, 32, 28),
    ("central.conv3", 32, 32, 14),
];

/// The microseconds of each of `reps` calls of `f`, timed one by one.
fn time(reps: usize, mut f: impl FnMut()) -> Vec<f64> {
    (0..reps)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect()
}

/// Runs the suite: `rounds` alternated rounds of about `round_s` seconds per kernel.
pub(crate) fn run(quick: bool) -> Figures {
    let (rounds, round_s) = if quick { (3, 0.1) } else { (7, 0.4) };
    let mut figures = Figures::default();
    for (name, cin, cout, size) in LAYERS {
        let g = ConvGeometry {
            cin,
            cout,
            h: size,
            w: size,
            kh: 3,
            kw: 3,
            pad_top: 1,
            pad_left: 1,
            oh: size,
            ow: size,
        };
        // Fixed values of both signs; the kernels' speed does not depend on them.
        let weights: Vec<f32> = (0..cout * g.taps()).map(|i| ((i * 37) % 17) as f32 / 8.0 - 1.0).collect();
        let bias: Vec<f32> = (0..cout).map(|i| i as f32 / 4.0 - 1.0).collect();
        let packed = direct::pack(&g, &weights);
        let bias = direct::pad_bias(&g, &bias);
        let padded: Vec<f32> =
            (0..cin * g.padded_h() * g.padded_w()).map(|i| ((i * 13) % 29) as f32 / 16.0 - 0.9).collect();
        let mut full = vec![0f32; cout * size * size];
        let mut pooled = vec![0f32; cout * (size / 2) * (size / 2)];
        let in_kernel = direct::pools_in_kernel();
        let u = winograd::transform_weights_always(&g, &packed);
        let backend_takes_winograd = winograd::transform_weights(&g, &packed).is_some();
        let mut transformed = vec![0f32; winograd::transformed_len(&g)];
        // The same layer on int8: weights in -128..=127, u8 input with zero point 3.
        let int_weights: Vec<i32> = (0..cout * g.taps()).map(|i| ((i * 37) % 256) as i32 - 128).collect();
        let int_bias: Vec<i32> = (0..cout as i32).map(|i| i * 100 - 700).collect();
        let int = Packed::new(g, &int_weights, &int_bias, 3, (0, 255)).and_then(IntConv::new);
        let int_input: Vec<u8> = (0..cin * size * size).map(|i| ((i * 13) % 251) as u8).collect();
        let mut int_scratch = IntScratch::default();
        let plane = size * size;
        let mut int_run = |int: &IntConv, out: &mut [f32]| {
            let load = |p: usize, dst: &mut [u8]| dst.copy_from_slice(&int_input[p * plane..][..plane]);
            int.run(1, true, load, out, &mut int_scratch);
        };

        let mut plain = || direct::convolve(&g, &padded, &packed, &bias, true, false, &mut full);
        plain();
        let once = median(&mut time(5, &mut plain)).max(0.1);
        let reps = ((round_s * 1e6 / once) as usize).clamp(3, 20_000);
        let (mut d, mut dp, mut w, mut i8p) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            d.extend(time(reps, || direct::convolve(&g, &padded, &packed, &bias, true, false, &mut full)));
            if in_kernel {
                dp.extend(time(reps, || {
                    direct::convolve(&g, &padded, &packed, &bias, true, true, &mut pooled)
                }));
            }
            if let Some(u) = &u {
                w.extend(time(reps, || {
                    winograd::convolve_pooled(&g, &padded, u, &bias, true, &mut transformed, &mut pooled)
                }));
            }
            if let Some(int) = &int {
                i8p.extend(time(reps, || int_run(int, &mut pooled)));
            }
        }
        let direct_us = median(&mut d);
        let macs = (cout * size * size * g.taps()) as f64;
        figures.push(format!("kernels.{name}.direct.median_us"), direct_us, "us");
        figures.push(format!("kernels.{name}.direct.macs_per_ns"), macs / direct_us / 1e3, "macs_per_ns");
        let mut line = format!("{name:14} direct {direct_us:9.2} us ({:5.1} MAC/ns)", macs / direct_us / 1e3);
        let mut fp32_pooled = None;
        if !dp.is_empty() {
            let dp = median(&mut dp);
            figures.push(format!("kernels.{name}.direct_pooled.median_us"), dp, "us");
            line += &format!("  pooled {dp:9.2} us");
            fp32_pooled = Some(dp);
            if !w.is_empty() {
                let w = median(&mut w);
                figures.push(format!("kernels.{name}.winograd.median_us"), w, "us");
                figures.push(format!("kernels.ratio_winograd_over_direct.{name}"), w / dp, "ratio");
                line += &format!("  winograd {w:9.2} us ({:.3})", w / dp);
                if backend_takes_winograd {
                    fp32_pooled = Some(w);
                }
            }
        }
        if !i8p.is_empty() {
            let i8p = median(&mut i8p);
            figures.push(format!("kernels.{name}.int8_pooled.median_us"), i8p, "us");
            line += &format!("  int8 {i8p:9.2} us");
            if let Some(fp32) = fp32_pooled {
                figures.push(format!("kernels.ratio_int8_over_fp32.{name}"), i8p / fp32, "ratio");
                line += &format!(" ({:.3})", i8p / fp32);
            }
        }
        eprintln!("{line}");
    }
    peaks(rounds, round_s, &mut figures);
    figures
}

/// The instruction ceilings, alternated: `rounds` rounds of about `round_s` seconds each.
fn peaks(rounds: usize, round_s: f64, figures: &mut Figures) {
    let (Some(fp32), int8) = (peak::fp32(), peak::int8()) else {
        eprintln!("peak: no vector FMA on this CPU; no ceilings to measure");
        return;
    };
    // MACs per ns of `probe` over `iterations`, one timing.
    let rate = |probe: &peak::Probe, iterations: u64| {
        let start = Instant::now();
        std::hint::black_box(probe.run(iterations));
        (probe.macs_per_iteration * iterations) as f64 / start.elapsed().as_secs_f64() / 1e9
    };
    // Iterations for about a tenth of a round, from a first timing.
    let size = |probe: &peak::Probe| {
        let per_ns = rate(probe, 100_000).max(0.1);
        ((round_s / 10.0 * 1e9 * per_ns / probe.macs_per_iteration as f64) as u64).max(1000)
    };
    let fp32_n = size(&fp32);
    let int8_n = int8.as_ref().map(size);
    let (mut f, mut i) = (Vec::new(), Vec::new());
    for _ in 0..rounds * 10 {
        f.push(rate(&fp32, fp32_n));
        if let (Some(int8), Some(n)) = (&int8, int8_n) {
            i.push(rate(int8, n));
        }
    }
    let f = median(&mut f);
    figures.push("kernels.peak.fp32.macs_per_ns", f, "macs_per_ns");
    let mut line = format!("peak           fp32 ({}) {f:6.1} MAC/ns", fp32.name);
    if let Some(int8) = &int8 {
        let i = median(&mut i);
        figures.push("kernels.peak.int8.macs_per_ns", i, "macs_per_ns");
        figures.push("kernels.ratio_peak_int8_over_fp32", f / i, "ratio");
        line +=
            &format!("  int8 ({}) {i:6.1} MAC/ns  (time per MAC, int8 over fp32: {:.3})", int8.name, f / i);
    }
    eprintln!("{line}");
}
