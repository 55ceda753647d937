//! What the fuzz targets share.
//!
//! - An allocation meter: every target runs with [`Meter`] as its global allocator, so a
//!   target can check that the heap a parser used for one input stays proportional to the
//!   input ([`peak_during`]). libFuzzer's `-malloc_limit_mb` only catches one large
//!   allocation; the meter also catches many small ones that add up.
//! - Structured guest values for the WIT boundary target ([`wit`]).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicIsize, Ordering};

pub mod wit;

/// Counts live heap bytes and their high-water mark, then hands the work to [`System`].
pub struct Meter;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn grew(by: usize) {
    let by = isize::try_from(by).unwrap_or(isize::MAX);
    let now = LIVE.fetch_add(by, Ordering::Relaxed).saturating_add(by);
    PEAK.fetch_max(now, Ordering::Relaxed);
}

fn shrank(by: usize) {
    LIVE.fetch_sub(isize::try_from(by).unwrap_or(isize::MAX), Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to `System`; the counters only observe sizes.
unsafe impl GlobalAlloc for Meter {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                shrank(layout.size() - new_size);
            }
        }
        p
    }
}

#[global_allocator]
static METER: Meter = Meter;

/// Runs `f` and returns its result with the most heap it had in use at once, in bytes,
/// beyond what was live when it started.
pub fn peak_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let start = LIVE.load(Ordering::Relaxed);
    PEAK.store(start, Ordering::Relaxed);
    let r = f();
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(start);
    (r, usize::try_from(peak).unwrap_or(0))
}

/// Whether `CASCADE_FUZZ_VERBOSE` is set: targets then print what each input became, for
/// replaying a crash or checking a seed (`cargo fuzz run TARGET FILE`).
pub fn verbose() -> bool {
    static VERBOSE: OnceLock<bool> = OnceLock::new();
    *VERBOSE.get_or_init(|| std::env::var_os("CASCADE_FUZZ_VERBOSE").is_some())
}

/// Fails the input (a libFuzzer crash) if `peak` heap bytes exceed `base + factor * input`.
/// With `CASCADE_FUZZ_VERBOSE` set (when replaying inputs), prints the measurement too.
pub fn check_heap(what: &str, peak: usize, input: usize, base: usize, factor: usize) {
    let bound = base.saturating_add(factor.saturating_mul(input));
    if verbose() {
        eprintln!("{what}: {peak} heap bytes for {input} input bytes (bound {bound})");
    }
    assert!(
        peak <= bound,
        "{what}: {peak} heap bytes for a {input}-byte input, more than the bound of {bound} \
         ({base} + {factor} per input byte)"
    );
}

/// A tiny deterministic generator (xorshift64*) for choices a target derives from a seed
/// byte, such as how to split a stream into chunks.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (any value, zero included).
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// The next number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x % n as u64) as usize
    }
}
