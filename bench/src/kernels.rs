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
//! body).

use std::time::Instant;

use cascade_kernels::{ConvGeometry, direct, winograd};
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
        let mut transformed = vec![0f32; winograd::transformed_len(&g)];

        let mut plain = || direct::convolve(&g, &padded, &packed, &bias, true, false, &mut full);
        plain();
        let once = median(&mut time(5, &mut plain)).max(0.1);
        let reps = ((round_s * 1e6 / once) as usize).clamp(3, 20_000);
        let (mut d, mut dp, mut w) = (Vec::new(), Vec::new(), Vec::new());
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
        }
        let direct_us = median(&mut d);
        let macs = (cout * size * size * g.taps()) as f64;
        figures.push(format!("kernels.{name}.direct.median_us"), direct_us, "us");
        figures.push(format!("kernels.{name}.direct.macs_per_ns"), macs / direct_us / 1e3, "macs_per_ns");
        let mut line = format!("{name:14} direct {direct_us:9.2} us ({:5.1} MAC/ns)", macs / direct_us / 1e3);
        if !dp.is_empty() {
            let dp = median(&mut dp);
            figures.push(format!("kernels.{name}.direct_pooled.median_us"), dp, "us");
            line += &format!("  pooled {dp:9.2} us");
            if !w.is_empty() {
                let w = median(&mut w);
                figures.push(format!("kernels.{name}.winograd.median_us"), w, "us");
                figures.push(format!("kernels.ratio_winograd_over_direct.{name}"), w / dp, "ratio");
                line += &format!("  winograd {w:9.2} us ({:.3})", w / dp);
            }
        }
        eprintln!("{line}");
    }
    figures
}
