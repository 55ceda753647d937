//! How many multiply-adds per nanosecond this CPU can issue at best on the instructions the
//! convolution kernels use: the fp32 fused multiply-add of [`crate::direct`] and
//! [`crate::winograd`], and the integer instruction sequence of [`crate::intconv`]. Each
//! probe runs one instruction sequence on twelve independent register accumulators, with no
//! loads, so that neither latency nor memory limits it: a ceiling no kernel on those
//! instructions can pass. The ratio of the two ceilings, measured in one run by
//! `cascade-bench kernels`, says how much faster than fp32 an int8 kernel can possibly be on
//! this CPU: four times with AVX-512 VNNI (64 multiply-adds per instruction against 16), and
//! no faster at all on plain AVX2, whose exact sequence is a 16-bit multiply-add (16
//! products) and an add against one 8-lane FMA.

use std::hint::black_box;

/// Independent accumulators per probe: enough to cover the latency of every sequence here
/// (4 cycles on two FMA pipes needs eight) within sixteen vector registers.
const CHAINS: usize = 12;

/// A SIMD vector: integer or float lanes with no padding, so every byte is initialised.
trait Vector: Copy {}
#[cfg(target_arch = "x86_64")]
impl Vector for std::arch::x86_64::__m256 {}
#[cfg(target_arch = "x86_64")]
impl Vector for std::arch::x86_64::__m256i {}
#[cfg(target_arch = "x86_64")]
impl Vector for std::arch::x86_64::__m512 {}
#[cfg(target_arch = "x86_64")]
impl Vector for std::arch::x86_64::__m512i {}
#[cfg(target_arch = "aarch64")]
impl Vector for std::arch::aarch64::float32x4_t {}
#[cfg(target_arch = "aarch64")]
impl Vector for std::arch::aarch64::int32x4_t {}

/// Every byte of the accumulators, folded into one number that depends on all of them.
#[cfg_attr(not(any(target_arch = "x86_64", target_arch = "aarch64")), allow(dead_code))]
fn fold<V: Vector>(acc: &[V]) -> u64 {
    // SAFETY: a `Vector` has no padding, so every byte of the slice is initialised and may
    // be read as a `u8`.
    let bytes = unsafe { std::slice::from_raw_parts(acc.as_ptr().cast::<u8>(), size_of_val(acc)) };
    bytes.iter().fold(0u64, |s, &b| s.wrapping_mul(31).wrapping_add(u64::from(b)))
}

/// One instruction sequence in a loop, to be timed by the caller.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    /// The kernel path it stands for, as [`crate::kernel_paths`] names it.
    pub name: &'static str,
    /// Multiply-adds per iteration.
    pub macs_per_iteration: u64,
    run: fn(u64) -> u64,
}

impl Probe {
    /// Runs `iterations` iterations; the result depends on every instruction run (return it
    /// to `black_box` so that none is optimised away).
    pub fn run(&self, iterations: u64) -> u64 {
        (self.run)(black_box(iterations))
    }
}

/// The fp32 FMA of this CPU's direct convolution, if it has a vector one.
pub fn fp32() -> Option<Probe> {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            return Some(Probe {
                name: "avx512f",
                macs_per_iteration: 16 * CHAINS as u64,
                run: x86::fma_zmm,
            });
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Some(Probe { name: "avx2", macs_per_iteration: 8 * CHAINS as u64, run: x86::fma_ymm });
        }
    }
    #[cfg(target_arch = "aarch64")]
    return Some(Probe { name: "neon", macs_per_iteration: 4 * CHAINS as u64, run: arm::fmla });
    #[allow(unreachable_code, reason = "reached on x86_64 without AVX2")]
    None
}

/// The integer sequence of this CPU's int8 convolution ([`crate::intconv::kernel_path`]),
/// if it has one.
pub fn int8() -> Option<Probe> {
    let name = crate::intconv::kernel_path();
    let (macs, run): (u64, fn(u64) -> u64) = match name {
        #[cfg(target_arch = "x86_64")]
        "avx512vnni" => (64, x86::dpbusd_zmm),
        #[cfg(target_arch = "x86_64")]
        "avxvnni" => (32, x86::dpbusd_ymm),
        #[cfg(target_arch = "x86_64")]
        "avx2-pmaddwd" => (16, x86::madd_ymm),
        #[cfg(target_arch = "aarch64")]
        "sdot" => (16, arm::sdot),
        _ => return None,
    };
    Some(Probe { name, macs_per_iteration: macs * CHAINS as u64, run })
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::hint::black_box;

    use super::{CHAINS, fold};

    // The probes are `fn(u64) -> u64` and only handed out on a CPU with their features:
    // each is a safe wrapper over a `target_feature` body.
    pub(super) fn fma_ymm(n: u64) -> u64 {
        // SAFETY: `fp32` hands this out only on a CPU with AVX2 and FMA.
        unsafe { fma_ymm_body(n) }
    }
    pub(super) fn fma_zmm(n: u64) -> u64 {
        // SAFETY: `fp32` hands this out only on a CPU with AVX-512F.
        unsafe { fma_zmm_body(n) }
    }
    pub(super) fn madd_ymm(n: u64) -> u64 {
        // SAFETY: `int8` hands this out only where `intconv` runs AVX2.
        unsafe { madd_ymm_body(n) }
    }
    pub(super) fn dpbusd_ymm(n: u64) -> u64 {
        // SAFETY: `int8` hands this out only where `intconv` runs AVX-VNNI.
        unsafe { dpbusd_ymm_body(n) }
    }
    pub(super) fn dpbusd_zmm(n: u64) -> u64 {
        // SAFETY: `int8` hands this out only where `intconv` runs AVX-512 VNNI.
        unsafe { dpbusd_zmm_body(n) }
    }

    /// `acc = acc * a + b`, converging to 1 from where it starts: finite whatever `n`.
    #[target_feature(enable = "avx2,fma")]
    fn fma_ymm_body(n: u64) -> u64 {
        let (a, b) = (_mm256_set1_ps(black_box(0.999)), _mm256_set1_ps(black_box(0.001)));
        let mut acc: [__m256; CHAINS] = std::array::from_fn(|i| _mm256_set1_ps(i as f32));
        for _ in 0..n {
            // Indexed: an iterator would move the accumulators through memory.
            #[allow(clippy::needless_range_loop)]
            for i in 0..CHAINS {
                acc[i] = _mm256_fmadd_ps(acc[i], a, b);
            }
        }
        fold(&acc)
    }

    #[target_feature(enable = "avx512f")]
    fn fma_zmm_body(n: u64) -> u64 {
        let (a, b) = (_mm512_set1_ps(black_box(0.999)), _mm512_set1_ps(black_box(0.001)));
        let mut acc: [__m512; CHAINS] = std::array::from_fn(|i| _mm512_set1_ps(i as f32));
        for _ in 0..n {
            #[allow(clippy::needless_range_loop)]
            for i in 0..CHAINS {
                acc[i] = _mm512_fmadd_ps(acc[i], a, b);
            }
        }
        fold(&acc)
    }

    /// The exact AVX2 sequence of `intconv`: a 16-bit multiply-add (16 products into 8 i32
    /// lanes) and an add into the accumulator. The accumulator is also the multiplied input,
    /// so nothing is loop-invariant; the values wrap, which costs nothing.
    #[target_feature(enable = "avx2")]
    fn madd_ymm_body(n: u64) -> u64 {
        let w = _mm256_set1_epi32(black_box(0x0003_fffd));
        let mut acc: [__m256i; CHAINS] = std::array::from_fn(|i| _mm256_set1_epi32(i as i32));
        for _ in 0..n {
            #[allow(clippy::needless_range_loop)]
            for i in 0..CHAINS {
                acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(acc[i], w));
            }
        }
        fold(&acc)
    }

    #[target_feature(enable = "avx2,avxvnni")]
    fn dpbusd_ymm_body(n: u64) -> u64 {
        let (x, w) = (_mm256_set1_epi32(black_box(0x0102_0304)), _mm256_set1_epi32(black_box(-0x0102_0305)));
        let mut acc: [__m256i; CHAINS] = std::array::from_fn(|i| _mm256_set1_epi32(i as i32));
        for _ in 0..n {
            #[allow(clippy::needless_range_loop)]
            for i in 0..CHAINS {
                acc[i] = _mm256_dpbusd_avx_epi32(acc[i], x, w);
            }
        }
        fold(&acc)
    }

    #[target_feature(enable = "avx512f,avx512vnni")]
    fn dpbusd_zmm_body(n: u64) -> u64 {
        let (x, w) = (_mm512_set1_epi32(black_box(0x0102_0304)), _mm512_set1_epi32(black_box(-0x0102_0305)));
        let mut acc: [__m512i; CHAINS] = std::array::from_fn(|i| _mm512_set1_epi32(i as i32));
        for _ in 0..n {
            #[allow(clippy::needless_range_loop)]
            for i in 0..CHAINS {
                acc[i] = _mm512_dpbusd_epi32(acc[i], x, w);
            }
        }
        fold(&acc)
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use std::arch::aarch64::*;
    use std::hint::black_box;

    use super::{CHAINS, fold};

    /// `acc = acc + a * b` on four f32 lanes (NEON is part of every aarch64 CPU).
    pub(super) fn fmla(n: u64) -> u64 {
        // SAFETY: NEON is a baseline feature of aarch64.
        let (a, b) = unsafe { (vdupq_n_f32(black_box(0.999)), vdupq_n_f32(black_box(0.001))) };
        // SAFETY: as above.
        let mut acc: [float32x4_t; CHAINS] = std::array::from_fn(|i| unsafe { vdupq_n_f32(i as f32) });
        for _ in 0..n {
            #[allow(clippy::needless_range_loop)]
            for i in 0..CHAINS {
                // SAFETY: as above.
                acc[i] = unsafe { vfmaq_f32(acc[i], a, b) };
            }
        }
        fold(&acc)
    }

    pub(super) fn sdot(n: u64) -> u64 {
        // SAFETY: `int8` hands this out only where `intconv` runs `sdot`.
        unsafe { sdot_body(n) }
    }

    #[target_feature(enable = "neon,dotprod")]
    fn sdot_body(n: u64) -> u64 {
        let (x, w) = (
            vreinterpretq_s8_s32(vdupq_n_s32(black_box(0x0102_0304))),
            vreinterpretq_s8_s32(vdupq_n_s32(black_box(-0x0102_0305))),
        );
        let mut acc: [int32x4_t; CHAINS] = std::array::from_fn(|i| vdupq_n_s32(i as i32));
        for _ in 0..n {
            #[allow(clippy::needless_range_loop)]
            for i in 0..CHAINS {
                acc[i] = crate::intconv::sdot(acc[i], x, w);
            }
        }
        fold(&acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_probe_this_cpu_has_runs_and_depends_on_its_iterations() {
        for probe in [fp32(), int8()].into_iter().flatten() {
            assert!(probe.macs_per_iteration > 0, "{}", probe.name);
            // Different iteration counts leave different accumulators: the loop ran.
            assert_ne!(probe.run(10), probe.run(11), "{}", probe.name);
        }
    }
}
