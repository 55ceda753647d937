//! The kernels against a definition-level reference, on every instruction set this CPU has
//! and on an emulation of both instructions.

use super::*;

/// The instruction emulated in plain Rust, unsigned (`vpdpbusd`) or signed (`sdot`)
/// input bytes: checks the packing, layout and constants on any CPU.
#[derive(Clone, Copy)]
struct Emulated<const SIGNED: bool>([i32; 16]);

impl<const SIGNED: bool> Lanes for Emulated<SIGNED> {
    const SIGNED: bool = SIGNED;
    unsafe fn splat(v: i32) -> Self {
        Emulated([v; 16])
    }
    unsafe fn load(bytes: &[u8]) -> Self {
        Emulated(std::array::from_fn(|i| i32::from_le_bytes(bytes[i * 4..][..4].try_into().unwrap())))
    }
    unsafe fn load_input(bytes: &[u8]) -> Self {
        let flip = if SIGNED { 0x8080_8080_u32 as i32 } else { 0 };
        // SAFETY: no CPU feature needed.
        Emulated(unsafe { Self::load(bytes) }.0.map(|v| v ^ flip))
    }
    unsafe fn max(self, other: Self) -> Self {
        Emulated(std::array::from_fn(|i| self.0[i].max(other.0[i])))
    }
    unsafe fn store_pair_max(self, dst: &mut [f32]) {
        store_pair_max_lanes(self.0, dst);
    }
    unsafe fn dot(self, input: Self, weights: Self) -> Self {
        let byte = |b: u8| if SIGNED { i32::from(b as i8) } else { i32::from(b) };
        Emulated(std::array::from_fn(|i| {
            let (x, w) = (input.0[i].to_le_bytes(), weights.0[i].to_le_bytes());
            (0..4).fold(self.0[i], |s, j| s.wrapping_add(byte(x[j]) * i32::from(w[j] as i8)))
        }))
    }
    unsafe fn store(self, dst: &mut [f32]) {
        store_lanes(self.0, dst);
    }
    unsafe fn sum(self) -> i32 {
        self.0.iter().fold(0i32, |s, &v| s.wrapping_add(v))
    }
}

/// The reference: `Σ (x - x_zero) * w + bias` straight from the definition, in i64.
fn reference(geo: &ConvGeometry, x: &[i32], x_zero: i32, w: &[i32], bias: &[i32], n: usize) -> Vec<f32> {
    let mut out = Vec::new();
    for img in 0..n {
        for oc in 0..geo.cout {
            for oy in 0..geo.oh {
                for ox in 0..geo.ow {
                    let mut acc = i64::from(bias[oc]);
                    for ci in 0..geo.cin {
                        for ky in 0..geo.kh {
                            for kx in 0..geo.kw {
                                let (iy, ix) = (
                                    (oy + ky) as i64 - geo.pad_top as i64,
                                    (ox + kx) as i64 - geo.pad_left as i64,
                                );
                                if iy < 0 || ix < 0 || iy >= geo.h as i64 || ix >= geo.w as i64 {
                                    continue;
                                }
                                let xv =
                                    x[((img * geo.cin + ci) * geo.h + iy as usize) * geo.w + ix as usize];
                                let wv = w[((oc * geo.cin + ci) * geo.kh + ky) * geo.kw + kx];
                                acc += i64::from(xv - x_zero) * i64::from(wv);
                            }
                        }
                    }
                    out.push(acc as f32);
                }
            }
        }
    }
    out
}

struct Case {
    geo: ConvGeometry,
    x: Vec<i32>,
    w: Vec<i32>,
    bias: Vec<i32>,
    x_zero: i32,
    x_range: (i32, i32),
    n: usize,
}

fn cases() -> Vec<Case> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |m: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % m
    };
    let geo = |cin, cout, h, w, kh, kw, pad| ConvGeometry {
        cin,
        cout,
        h,
        w,
        kh,
        kw,
        pad_top: pad,
        pad_left: pad,
        oh: h + 2 * pad + 1 - kh,
        ow: w + 2 * pad + 1 - kw,
    };
    // The edge model's layers, its classifier as a convolution, then odd shapes: few
    // and many channels, folded and grouped layouts, partial tiles and blocks.
    let shapes = [
        geo(1, 8, 28, 28, 3, 3, 1),
        geo(8, 16, 14, 14, 3, 3, 1),
        geo(1, 10, 28, 28, 28, 28, 0),
        geo(3, 11, 9, 37, 3, 2, 1),
        geo(2, 24, 5, 17, 3, 3, 0),
        geo(5, 17, 6, 20, 1, 1, 0),
        geo(7, 5, 8, 8, 5, 5, 2),
        geo(16, 33, 7, 7, 3, 3, 1),
        geo(3, 3, 4, 4, 4, 4, 0),
    ];
    let mut cases = Vec::new();
    for (i, geo) in shapes.into_iter().enumerate() {
        let x_range = if i % 2 == 0 { (0, 255) } else { (-128, 127) };
        let span = (x_range.1 - x_range.0 + 1) as u64;
        let n = 1 + i % 3;
        let x = (0..n * geo.cin * geo.h * geo.w).map(|_| x_range.0 + next(span) as i32).collect();
        // Extremes included: -128 and 127 weights, zero points at both ends.
        let w = (0..geo.cout * geo.cin * geo.kh * geo.kw).map(|_| next(256) as i32 - 128).collect();
        let bias = (0..geo.cout).map(|_| next(20_001) as i32 - 10_000).collect();
        let x_zero = [x_range.0, x_range.1, x_range.0 + 37][i % 3];
        cases.push(Case { geo, x, w, bias, x_zero, x_range, n });
    }
    cases
}

/// Packs `case` and runs it through `run` (pooled or not), loading its input as unsigned
/// bytes. The scratch buffers were first used by a run on other input, as a pooled run
/// state's are.
fn run_case(
    case: &Case,
    pool: bool,
    form: Form,
    run: impl Fn(&Packed, &mut dyn FnMut(usize, &mut [u8]), &mut [f32], &mut IntScratch),
) -> Vec<f32> {
    let g = &case.geo;
    let packed = Packed::new(*g, &case.w, &case.bias, case.x_zero, case.x_range).expect("weights fit i8");
    let packed = packed.with_form(form);
    let plane = g.h * g.w;
    let shift = packed.shift();
    let mut load = |p: usize, dst: &mut [u8]| {
        for (d, &v) in dst.iter_mut().zip(&case.x[p * plane..][..plane]) {
            *d = (v + shift) as u8;
        }
    };
    let mut scratch = IntScratch::default();
    let mut out = vec![f32::NAN; case.n * packed.image_out(pool)];
    run(&packed, &mut |_, dst: &mut [u8]| dst.fill(0xA5), &mut out, &mut scratch);
    out.fill(f32::NAN);
    run(&packed, &mut load, &mut out, &mut scratch);
    out
}

/// The reference for `case`, max-pooled by the f32 loop's pool when `pool`.
fn expected(case: &Case, pool: bool) -> Vec<f32> {
    let g = &case.geo;
    let plain = reference(g, &case.x, case.x_zero, &case.w, &case.bias, case.n);
    if pool { crate::pool::pool(&plain, &[case.n, g.cout, g.oh, g.ow]).0 } else { plain }
}

#[test]
fn the_packed_layout_computes_the_convolution_exactly() {
    for case in cases() {
        for pool in [false, true] {
            let expected = expected(&case, pool);
            // SAFETY: the emulation needs no CPU feature.
            let got = run_case(&case, pool, Form::Bytes, |p, load, out, s| unsafe {
                p.run_with::<Emulated<false>, 16>(case.n, pool, load, out, s)
            });
            assert_eq!(bits(&expected), bits(&got), "{:?} pool {pool}", case.geo);
            // SAFETY: as above.
            let got = run_case(&case, pool, Form::Bytes, |p, load, out, s| unsafe {
                p.run_with::<Emulated<true>, 4>(case.n, pool, load, out, s)
            });
            assert_eq!(bits(&expected), bits(&got), "signed {:?} pool {pool}", case.geo);
        }
    }
}

#[test]
fn every_dot_product_kernel_this_cpu_has_matches_the_reference_bit_for_bit() {
    let mut ran = Vec::new();
    for case in cases() {
        for pool in [false, true] {
            let expected = expected(&case, pool);
            #[cfg(target_arch = "x86_64")]
            {
                if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has the features.
                    let got = run_case(&case, pool, Form::Bytes, |p, load, out, s| unsafe {
                        x86::run_avx512(p, case.n, pool, load, out, s)
                    });
                    assert_eq!(bits(&expected), bits(&got), "avx512vnni {:?} pool {pool}", case.geo);
                    ran.push("avx512vnni");
                }
                if is_x86_feature_detected!("avxvnni") && is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has the features.
                    let got = run_case(&case, pool, Form::Bytes, |p, load, out, s| unsafe {
                        x86::run_avx256(p, case.n, pool, load, out, s)
                    });
                    assert_eq!(bits(&expected), bits(&got), "avxvnni {:?} pool {pool}", case.geo);
                    ran.push("avxvnni");
                }
                if is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has the feature.
                    let got = run_case(&case, pool, Form::Pairs, |p, load, out, s| unsafe {
                        x86::run_avx2(p, case.n, pool, load, out, s)
                    });
                    assert_eq!(bits(&expected), bits(&got), "avx2 {:?} pool {pool}", case.geo);
                    ran.push("avx2");
                }
            }
            #[cfg(target_arch = "aarch64")]
            if std::arch::is_aarch64_feature_detected!("dotprod") {
                // SAFETY: the CPU has the feature.
                let got = run_case(&case, pool, Form::Bytes, |p, load, out, s| unsafe {
                    arm::run_sdot(p, case.n, pool, load, out, s)
                });
                assert_eq!(bits(&expected), bits(&got), "sdot {:?} pool {pool}", case.geo);
                ran.push("sdot");
            }
        }
    }
    ran.sort();
    ran.dedup();
    eprintln!("dot-product kernels checked on this CPU: {ran:?} (best: {})", kernel_path());
}

#[test]
fn weights_outside_i8_or_foreign_input_types_are_left_to_the_f32_loop() {
    let case = &cases()[0];
    let g = case.geo;
    assert!(Packed::new(g, &case.w, &case.bias, case.x_zero, case.x_range).is_some());
    let mut wide = case.w.clone();
    wide[3] = 128;
    assert!(Packed::new(g, &wide, &case.bias, case.x_zero, case.x_range).is_none());
    assert!(Packed::new(g, &case.w, &case.bias, 0, (-32768, 32767)).is_none());
    assert!(Packed::new(g, &case.w, &case.bias, 300, (0, 255)).is_none());
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}
