//! The int8 direct convolution on the CPU's integer dot-product instructions.
//!
//! [`crate::direct`] runs an int8 convolution exactly on its f32 loop: one multiply-add per
//! lane and instruction. Where the CPU has a four-way u8 x i8 dot product into i32 lanes
//! (AVX-512 VNNI `vpdpbusd` on sixteen lanes, AVX-VNNI the same on eight; signed by signed,
//! `sdot`, on aarch64 with the dot-product extension), one instruction does four
//! multiply-adds per lane, on inputs a quarter the size. Plain AVX2 has no such instruction;
//! its body does the same sum in 16-bit pairs with `vpmaddwd`, exactly, on input and weights
//! laid out as pairs for it (`Form`, `x86.rs`). This module is that path: weights packed at
//! load, the input re-laid per image, and the kernels, one body for every instruction set
//! (`Lanes`). It produces the f32 loop's accumulators bit for bit (the unit tests compare
//! them on random convolutions, and run the byte layout on an emulated instruction on any
//! CPU), so requantisation after it is shared; the 2x2 max pool that
//! often follows is taken on the sums before they are stored. The instruction-set bodies are
//! in `x86.rs` and `arm.rs` beside this file.
//!
//! **Arithmetic.** The instruction multiplies unsigned by signed bytes. The input is made
//! unsigned (`u = x + 128` for i8, `u = x` for u8, the zero point likewise: `u_zero`); the
//! weights, minus their zero point, must fit an i8 or this path is not built. Then
//! `Σ (x - x_zero)(w - w_zero) = Σ u·w' - u_zero·Σ w'`, and the second term and the bias are
//! one constant per output channel (`Packed::offset`). Padding is filled with `u_zero`, so
//! a padded tap adds `u_zero·w'`, which that constant takes back. `sdot` multiplies signed
//! bytes: its kernels load each input byte as `u - 128` and their constant adds `128·Σ w'`
//! back (`Lanes::SIGNED`). The i32 lanes wrap, so the sums are exact modulo 2^32; the true
//! result is below 2^24 in magnitude (checked at load for the f32 loop), so it is exact, and
//! exact again as the f32 the shared tail takes.
//!
//! **Layout.** The four bytes of a lane must be four terms of one output's sum. The input of
//! an image is re-laid as *quads*: for each group of four virtual channels, each padded row
//! and column, those channels' four bytes side by side. A virtual channel is an input channel
//! (the kernel keeps its width), or, for few input channels, an input channel shifted left by
//! `dx` columns (the kernel becomes one column wide, with `cin x kw` channels): whichever
//! takes fewer instructions, chosen at load. One tap of one group for sixteen output columns
//! is then one 64-byte load, which each output channel adds with its four weights broadcast:
//! `groups x kh x kw'` instructions per channel and sixteen outputs, where the f32 loop
//! takes `cin x kh x kw`.
//!
//! A convolution with one output pixel whose kernel covers its whole unpadded input (a
//! quantised matmul, which the runtime rewrites into such a convolution) is a dot product over the input instead: lanes run
//! along it, sixty-four terms per instruction.

use crate::{ConvGeometry, copy_row, sized};

/// Output columns per tile, as in the f32 loop: sixteen i32 lanes.
const TILE: usize = 16;
/// Output channels per packed weight block.
const BLOCK: usize = 16;
/// Bytes of one vector: sixteen lanes of four.
const VECTOR: usize = 64;
/// Output channels the dot-product kernel computes at once (weights padded to a multiple).
const DOT_CHANNELS: usize = 4;

/// The numbers the row kernel multiplies, laid out at load (weights) and per image (input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// Bytes, for the byte dot-product instructions: each quad row `[qw][4]` u8, each weight
    /// word four i8.
    Bytes,
    /// 16-bit pairs, for plain AVX2's `vpmaddwd` (`x86.rs`): each quad row is two rows of
    /// `[qw][2]` u16, the even bytes (0 and 2) of each quad then the odd ones (1 and 3); each
    /// weight word is weights 0 and 2 as two i16, then 1 and 3. The kernel multiplies them
    /// as they lie: nothing to widen or split in its loop.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code, reason = "plain AVX2's form"))]
    Pairs,
}

impl Form {
    /// Rows of `[qw][4]` bytes per quad row.
    const fn planes(self) -> usize {
        match self {
            Form::Bytes => 1,
            Form::Pairs => 2,
        }
    }
}

/// The dot-product instruction sets with a kernel here, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    /// AVX-512 VNNI: `vpdpbusd` on 512-bit vectors.
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
    /// AVX-VNNI: the same instruction on 256-bit vectors, two per sixteen lanes.
    #[cfg(target_arch = "x86_64")]
    AvxVnni,
    /// Plain AVX2: the byte dot product as two 16-bit multiply-adds (`vpmaddwd`), exact.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// aarch64's dot-product extension: `sdot` on four 128-bit vectors.
    #[cfg(target_arch = "aarch64")]
    Sdot,
}

impl Isa {
    /// The best set this CPU has, if any.
    fn best() -> Option<Isa> {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512f") {
                return Some(Isa::Avx512Vnni);
            }
            if is_x86_feature_detected!("avxvnni") && is_x86_feature_detected!("avx2") {
                return Some(Isa::AvxVnni);
            }
            if is_x86_feature_detected!("avx2") {
                return Some(Isa::Avx2);
            }
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("dotprod") {
            return Some(Isa::Sdot);
        }
        None
    }

    /// The form its row kernel multiplies.
    fn form(self) -> Form {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Form::Pairs,
            #[allow(unreachable_patterns, reason = "every set but plain AVX2")]
            _ => Form::Bytes,
        }
    }

    fn name(self) -> &'static str {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => "avx512vnni",
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni => "avxvnni",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => "avx2-pmaddwd",
            #[cfg(target_arch = "aarch64")]
            Isa::Sdot => "sdot",
        }
    }
}

/// The path int8 convolutions take on this CPU (for benchmark reports): a dot-product
/// instruction set, or the exact f32 loop of [`crate::direct`].
pub fn kernel_path() -> &'static str {
    Isa::best().map_or("f32-exact", Isa::name)
}

/// The integer kernels' buffers, kept from one run to the next by their caller (a
/// convolution node's run state): the input's layouts.
#[derive(Debug, Clone, Default)]
pub struct IntScratch {
    /// One image's input bytes, for the one-pixel dot layout.
    input: Vec<u8>,
    /// One unpadded input plane.
    plane: Vec<u8>,
    /// Padded input planes, the border at the input's zero point.
    padded: Vec<u8>,
    /// The input re-laid as quads of four channels.
    quads: Vec<u8>,
}

/// How the input is laid out for the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Lanes along output columns, over quads of virtual channels (module doc). `fold`: the
    /// virtual channels are (input channel, column shift) pairs and the kernel is one column
    /// wide; `kw` is the kernel width over quads (1 when folded).
    Rows { fold: bool, groups: usize, kw: usize },
    /// One output pixel: lanes along the input, `bytes` per image (zero padded to whole
    /// vectors).
    Dot { bytes: usize },
}

/// An int8 convolution packed for the dot-product kernels: independent of the instruction
/// set, which [`IntConv`] adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    geo: ConvGeometry,
    layout: Layout,
    /// i8 weights. Rows: `[block][group][ky][kx'][BLOCK][word]`, a word of four weights per
    /// output channel and tap in `form`; Dot: `[channel][bytes]`, channels padded to a
    /// multiple of [`DOT_CHANNELS`].
    weights: Vec<u8>,
    /// The form of the row layout's weights and input (Dot: always bytes).
    form: Form,
    /// Per output channel, padded like the weights: `bias - u_zero * Σ w'` (wrapping).
    offset: Vec<i32>,
    /// The same for signed-input instructions: `bias - (u_zero - 128) * Σ w'`.
    offset_signed: Vec<i32>,
    /// Rows: the byte offset of each tap's input vector in the quads from its tile's origin
    /// (the tile's first output column in the first group's row), in weight order, which is
    /// ascending (group, then kernel row, then column). Empty for Dot.
    taps: Vec<usize>,
    /// The input zero point, unsigned: what padding is filled with.
    u_zero: u8,
    /// Added to an input integer to make it unsigned: 128 for i8 inputs, 0 for u8.
    shift: i32,
}

impl Packed {
    /// Packs `weights` (OIHW, already minus their zero point) and `bias` for an input of
    /// integer range `x_range` (u8 or i8) with zero point `x_zero`. `None` when a weight does
    /// not fit an i8 or the input type is neither.
    pub fn new(
        geo: ConvGeometry,
        weights: &[i32],
        bias: &[i32],
        x_zero: i32,
        x_range: (i32, i32),
    ) -> Option<Packed> {
        let shift = match x_range {
            (0, 255) => 0,
            (-128, 127) => 128,
            _ => return None,
        };
        let u_zero = u8::try_from(x_zero + shift).ok()?;
        let taps = geo.cin * geo.kh * geo.kw;
        if weights.len() != geo.cout * taps || bias.len() != geo.cout {
            return None;
        }
        let weights: Vec<i8> = weights.iter().map(|&w| i8::try_from(w).ok()).collect::<Option<_>>()?;
        let one_pixel = geo.oh == 1
            && geo.ow == 1
            && geo.pad_top == 0
            && geo.pad_left == 0
            && (geo.kh, geo.kw) == (geo.h, geo.w);
        let layout = if one_pixel {
            Layout::Dot { bytes: taps.div_ceil(VECTOR) * VECTOR }
        } else {
            let folded = (geo.cin * geo.kw).div_ceil(4) * geo.kh;
            let grouped = geo.cin.div_ceil(4) * geo.kh * geo.kw;
            if folded < grouped {
                Layout::Rows { fold: true, groups: (geo.cin * geo.kw).div_ceil(4), kw: 1 }
            } else {
                Layout::Rows { fold: false, groups: geo.cin.div_ceil(4), kw: geo.kw }
            }
        };
        let channels = match layout {
            Layout::Rows { .. } => geo.cout.div_ceil(BLOCK) * BLOCK,
            Layout::Dot { .. } => geo.cout.div_ceil(DOT_CHANNELS) * DOT_CHANNELS,
        };
        let (mut offset, mut offset_signed) = (vec![0i32; channels], vec![0i32; channels]);
        for (oc, row) in weights.chunks_exact(taps).enumerate() {
            let sum: i32 = row.iter().map(|&w| i32::from(w)).sum();
            offset[oc] = bias[oc].wrapping_sub(i32::from(u_zero).wrapping_mul(sum));
            offset_signed[oc] = bias[oc].wrapping_sub((i32::from(u_zero) - 128).wrapping_mul(sum));
        }
        let weight = |oc: usize, ci: usize, ky: usize, kx: usize| {
            weights[((oc * geo.cin + ci) * geo.kh + ky) * geo.kw + kx]
        };
        let packed = match layout {
            Layout::Dot { bytes } => {
                let mut packed = vec![0u8; channels * bytes];
                for (row, dst) in weights.chunks_exact(taps).zip(packed.chunks_exact_mut(bytes)) {
                    for (d, &w) in dst.iter_mut().zip(row) {
                        *d = w as u8;
                    }
                }
                packed
            }
            Layout::Rows { fold, groups, kw } => {
                let quad_taps = groups * geo.kh * kw;
                let mut packed = vec![0u8; channels * quad_taps * 4];
                for oc in 0..geo.cout {
                    let block = &mut packed[oc / BLOCK * quad_taps * BLOCK * 4..][..quad_taps * BLOCK * 4];
                    for g in 0..groups {
                        for ky in 0..geo.kh {
                            for kx in 0..kw {
                                let tap = (g * geo.kh + ky) * kw + kx;
                                for j in 0..4 {
                                    let v = g * 4 + j;
                                    let w = match fold {
                                        true if v < geo.cin * geo.kw => {
                                            weight(oc, v / geo.kw, ky, v % geo.kw)
                                        }
                                        false if v < geo.cin => weight(oc, v, ky, kx),
                                        _ => 0,
                                    };
                                    block[(tap * BLOCK + oc % BLOCK) * 4 + j] = w as u8;
                                }
                            }
                        }
                    }
                }
                packed
            }
        };
        let taps = Packed::tap_offsets(&geo, layout, Form::Bytes);
        Some(Packed {
            geo,
            layout,
            weights: packed,
            form: Form::Bytes,
            offset,
            offset_signed,
            taps,
            u_zero,
            shift,
        })
    }

    /// Rows: the byte offset of each tap's input in quads of `form`, in weight order. Empty
    /// for Dot.
    fn tap_offsets(geo: &ConvGeometry, layout: Layout, form: Form) -> Vec<usize> {
        let Layout::Rows { groups, kw, .. } = layout else { return Vec::new() };
        let row_columns = Packed::quad_width(geo, kw) * form.planes();
        let rows = (0..groups).flat_map(|group| (0..geo.kh).map(move |ky| group * geo.padded_h() + ky));
        let taps: Vec<usize> =
            rows.flat_map(|row| (0..kw).map(move |kx| (row * row_columns + kx) * 4)).collect();
        // The tiles bound their reads by the last offset.
        debug_assert!(taps.is_sorted(), "tap offsets ascend");
        taps
    }

    /// Made ready for a kernel body that multiplies `form`: the row layout's weights and tap
    /// offsets re-laid from bytes to pairs if it wants them (Dot stays bytes).
    fn with_form(mut self, form: Form) -> Packed {
        if form == Form::Pairs && self.form == Form::Bytes && matches!(self.layout, Layout::Rows { .. }) {
            let widen =
                |a: u8, b: u8| u32::from(a as i8 as i16 as u16) | u32::from(b as i8 as i16 as u16) << 16;
            self.weights = (self.weights.chunks_exact(4))
                .flat_map(|w| [widen(w[0], w[2]), widen(w[1], w[3])])
                .flat_map(u32::to_le_bytes)
                .collect();
            self.taps = Packed::tap_offsets(&self.geo, self.layout, form);
            self.form = form;
        }
        self
    }

    /// The per-channel constants for kernel body `L`.
    fn offsets<L: Lanes>(&self) -> &[i32] {
        if L::SIGNED { &self.offset_signed } else { &self.offset }
    }

    /// Added to an input integer to make it unsigned (0 or 128).
    pub fn shift(&self) -> i32 {
        self.shift
    }

    /// Row stride of the quads of `geo` with kernel width `kw` over quads, in columns: whole
    /// tiles at every tap.
    fn quad_width(geo: &ConvGeometry, kw: usize) -> usize {
        geo.tiles() * TILE + kw - 1
    }

    /// The output shape of one image: `[cout][oh][ow]`, or pooled `[cout][oh / 2][ow / 2]`.
    fn image_out(&self, pool: bool) -> usize {
        let g = &self.geo;
        if pool { g.cout * (g.oh / 2) * (g.ow / 2) } else { g.cout * g.oh * g.ow }
    }

    /// Convolves a batch of `n` images with the kernel body `L`, `OB` output channels at a
    /// time (`OB` divides [`BLOCK`]), and with `pool` takes the max of each 2x2 window (stride
    /// 2, odd trailing rows and columns dropped) before storing. `load(p, plane)` writes input
    /// plane `p` (image `p / cin`, channel `p % cin`) as unsigned bytes. `out` is
    /// `[n][cout][oh][ow]`, or pooled `[n][cout][oh / 2][ow / 2]`. `scratch` holds the
    /// input's layouts between runs.
    ///
    /// # Safety
    /// The CPU has the instructions `L` uses.
    #[inline(always)]
    unsafe fn run_with<L: Lanes, const OB: usize>(
        &self,
        n: usize,
        pool: bool,
        load: &mut dyn FnMut(usize, &mut [u8]),
        out: &mut [f32],
        scratch: &mut IntScratch,
    ) {
        let g = &self.geo;
        let image_out = self.image_out(pool);
        if image_out == 0 {
            return;
        }
        let images = out.chunks_exact_mut(image_out).take(n).enumerate();
        match self.layout {
            Layout::Dot { bytes } => {
                let input = sized(&mut scratch.input, bytes, 0);
                for (img, dst) in images {
                    for (ci, chunk) in input.chunks_mut(g.h * g.w).take(g.cin).enumerate() {
                        load(img * g.cin + ci, chunk);
                    }
                    // SAFETY: forwarded from the caller. (One pixel: there is nothing to pool,
                    // and `image_out` is 0 when pooling.)
                    unsafe { dot::<L>(self, bytes, input, dst) };
                }
            }
            Layout::Rows { fold, groups, kw } => {
                assert_eq!(self.form, L::FORM, "packed for the kernel body's form");
                let (ph, pw) = (g.padded_h(), g.padded_w());
                let qw = Packed::quad_width(g, kw);
                let plane = sized(&mut scratch.plane, g.h * g.w, 0);
                let padded = sized(&mut scratch.padded, g.cin * ph * pw, self.u_zero);
                let quads = sized(&mut scratch.quads, groups * ph * qw * 4 * self.form.planes(), 0);
                for (img, dst) in images {
                    for ci in 0..g.cin {
                        load(img * g.cin + ci, plane);
                        let padded_plane = &mut padded[ci * ph * pw..][..ph * pw];
                        for (y, row) in plane.chunks_exact(g.w).enumerate() {
                            copy_row(&mut padded_plane[(g.pad_top + y) * pw + g.pad_left..][..g.w], row);
                        }
                    }
                    self.fill_quads(fold, groups, qw, padded, quads);
                    let rows = Rows { p: self, qw, quads };
                    // SAFETY: forwarded from the caller.
                    unsafe {
                        if pool {
                            rows.pooled::<L, OB>(dst);
                        } else {
                            rows.plain::<L, OB>(dst);
                        }
                    }
                }
            }
        }
    }

    /// Lays the padded input planes (`[cin][ph][pw]`) out as quads (`[group][ph][qw][4]`, or
    /// in pairs `[group][ph][2][qw][4]`: see [`Form`]). Inlined into the kernels, so it is
    /// compiled for their instructions.
    #[inline(always)]
    fn fill_quads(&self, fold: bool, groups: usize, qw: usize, padded: &[u8], quads: &mut [u8]) {
        let g = &self.geo;
        let (ph, pw) = (g.padded_h(), g.padded_w());
        for group in 0..groups {
            // Where the row of virtual channel `v` starts in its padded plane: shifted by its
            // column offset when folded. Channels past the last (a group's unused lanes) have
            // zero weights, so any row serves: channel 0's, with no buffer to allocate.
            let start = |v: usize| -> usize {
                let (ci, dx) = if fold { (v / g.kw, v % g.kw) } else { (v, 0) };
                if ci < g.cin { ci * ph * pw + dx } else { 0 }
            };
            let starts: [usize; 4] = std::array::from_fn(|j| start(group * 4 + j));
            let row = qw * 4 * self.form.planes();
            for y in 0..ph {
                let source = |j: usize| &padded[starts[j] + y * pw..][..qw];
                let (a, b, c, d) = (source(0), source(1), source(2), source(3));
                let dst = &mut quads[(group * ph + y) * row..][..row];
                match self.form {
                    Form::Bytes => {
                        let columns = a.iter().zip(b).zip(c.iter().zip(d));
                        for (quad, ((&a, &b), (&c, &d))) in dst.chunks_exact_mut(4).zip(columns) {
                            quad.copy_from_slice(&[a, b, c, d]);
                        }
                    }
                    Form::Pairs => {
                        let (even, odd) = dst.split_at_mut(qw * 4);
                        for (pair, (&lo, &hi)) in even.chunks_exact_mut(4).zip(a.iter().zip(c)) {
                            pair.copy_from_slice(&[lo, 0, hi, 0]);
                        }
                        for (pair, (&lo, &hi)) in odd.chunks_exact_mut(4).zip(b.iter().zip(d)) {
                            pair.copy_from_slice(&[lo, 0, hi, 0]);
                        }
                    }
                }
            }
        }
    }
}

/// The row kernel over one image's quads: lanes along output columns.
struct Rows<'a> {
    p: &'a Packed,
    /// Row stride of the quads, in columns.
    qw: usize,
    quads: &'a [u8],
}

impl Rows<'_> {
    /// The sums of output rows `y..y + R`, columns `x0..x0 + 16`, for `OB` output channels
    /// from channel `sub` of weights block `block`, bias and zero points included. The rows
    /// share each weight broadcast.
    ///
    /// # Safety
    /// The CPU has the instructions `L` uses.
    #[inline(always)]
    unsafe fn tile<L: Lanes, const OB: usize, const R: usize>(
        &self,
        block: usize,
        sub: usize,
        y: usize,
        x0: usize,
    ) -> [[L; OB]; R] {
        let p = self.p;
        debug_assert_eq!(p.form, Form::Bytes, "the generic tile reads bytes");
        let taps = &p.taps;
        let row_bytes = self.qw * 4;
        // Everything the tile reads, checked once: every tap's vector in each of the rows.
        let span = taps.last().map_or(0, |&last| last + VECTOR);
        let input = &self.quads[(y * self.qw + x0) * 4..][..span + (R - 1) * row_bytes];
        let weights = &p.weights[block * taps.len() * BLOCK * 4..][..taps.len() * BLOCK * 4];
        assert!(sub + OB <= BLOCK, "a tile's channels lie in one weight block");
        let offsets = &p.offsets::<L>()[block * BLOCK + sub..][..OB];
        // SAFETY: the caller's CPU has `L`'s instructions, all `L`'s methods need. Every
        // index below is in bounds: the offsets ascend, so tap `t`'s offset plus a vector lies
        // within `span`, each row `row_bytes` further; its weights are `(t * BLOCK + sub + OB) * 4 <= taps * BLOCK *
        // 4` bytes in.
        unsafe {
            let mut acc = [[L::splat(0); OB]; R];
            for row in acc.iter_mut() {
                for (a, &o) in row.iter_mut().zip(offsets) {
                    *a = L::splat(o);
                }
            }
            for (t, &offset) in taps.iter().enumerate() {
                let w = weights.get_unchecked((t * BLOCK + sub) * 4..(t * BLOCK + sub + OB) * 4);
                let v: [L; R] = std::array::from_fn(|r| {
                    let at = offset + r * row_bytes;
                    L::load_input(input.get_unchecked(at..at + VECTOR))
                });
                // Indexed, not iterated: an array iterator would move the vectors through
                // memory.
                #[allow(clippy::needless_range_loop)]
                for ob in 0..OB {
                    let word = w.get_unchecked(ob * 4..ob * 4 + 4);
                    let word = L::splat(i32::from_le_bytes([word[0], word[1], word[2], word[3]]));
                    for r in 0..R {
                        acc[r][ob] = acc[r][ob].dot(v[r], word);
                    }
                }
            }
            acc
        }
    }

    /// Every output row into `out` (`[cout][oh][ow]`).
    ///
    /// # Safety
    /// The CPU has the instructions `L` uses.
    #[inline(always)]
    unsafe fn plain<L: Lanes, const OB: usize>(&self, out: &mut [f32]) {
        let g = &self.p.geo;
        for (block, sub) in self.channel_tiles::<OB>() {
            let oc0 = block * BLOCK + sub;
            for y in 0..g.oh {
                for x0 in (0..g.ow).step_by(TILE) {
                    let cols = TILE.min(g.ow - x0);
                    // SAFETY: the caller's CPU has `L`'s instructions.
                    let [acc] = unsafe { L::row_tile::<OB, 1>(self, block, sub, y, x0) };
                    // Indexed, not iterated: an array iterator would move the vectors through
                    // memory.
                    for (ob, oc) in (oc0..g.cout.min(oc0 + OB)).enumerate() {
                        let dst = &mut out[(oc * g.oh + y) * g.ow + x0..][..cols];
                        // SAFETY: as above.
                        unsafe { acc[ob].store(dst) };
                    }
                }
            }
        }
    }

    /// Every pair of output rows, max-pooled 2x2 with stride 2, into `out` (`[cout][oh /
    /// 2][ow / 2]`).
    ///
    /// # Safety
    /// The CPU has the instructions `L` uses.
    #[inline(always)]
    unsafe fn pooled<L: Lanes, const OB: usize>(&self, out: &mut [f32]) {
        let g = &self.p.geo;
        let (oh, ow) = (g.oh / 2, g.ow / 2);
        for (block, sub) in self.channel_tiles::<OB>() {
            let oc0 = block * BLOCK + sub;
            for y in 0..oh {
                for x0 in (0..2 * ow).step_by(TILE) {
                    let cols = (TILE / 2).min(ow - x0 / 2);
                    // SAFETY: the caller's CPU has `L`'s instructions.
                    let [top, bottom] = unsafe { L::row_tile::<OB, 2>(self, block, sub, 2 * y, x0) };
                    for (ob, oc) in (oc0..g.cout.min(oc0 + OB)).enumerate() {
                        let dst = &mut out[(oc * oh + y) * ow + x0 / 2..][..cols];
                        // SAFETY: as above.
                        unsafe { top[ob].max(bottom[ob]).store_pair_max(dst) };
                    }
                }
            }
        }
    }

    /// The (block, first channel within it) of every tile of `OB` live output channels.
    fn channel_tiles<const OB: usize>(&self) -> impl Iterator<Item = (usize, usize)> + use<OB> {
        let cout = self.p.geo.cout;
        (0..cout.div_ceil(BLOCK))
            .flat_map(|block| (0..BLOCK).step_by(OB).map(move |sub| (block, sub)))
            .filter(move |(block, sub)| block * BLOCK + sub < cout)
    }
}

/// The one-pixel kernel: a dot product of the whole input (`bytes`, zero padded) with each
/// channel's weights, [`DOT_CHANNELS`] channels sharing each input load.
///
/// # Safety
/// The CPU has the instructions `L` uses.
#[inline(always)]
unsafe fn dot<L: Lanes>(p: &Packed, bytes: usize, input: &[u8], out: &mut [f32]) {
    let cout = p.geo.cout;
    let rows = p.weights.chunks_exact(bytes * DOT_CHANNELS);
    for (chunk, weights) in rows.enumerate() {
        let oc0 = chunk * DOT_CHANNELS;
        // SAFETY: the caller's CPU has `L`'s instructions, all `L`'s methods need; each
        // `load` gets a 64-byte slice.
        let sums = unsafe {
            let mut acc = [L::splat(0); DOT_CHANNELS];
            for (i, x) in input[..bytes].chunks_exact(VECTOR).enumerate() {
                let v = L::load_input(x);
                for (c, a) in acc.iter_mut().enumerate() {
                    *a = a.dot(v, L::load(&weights[c * bytes + i * VECTOR..][..VECTOR]));
                }
            }
            acc.map(|a| a.sum())
        };
        for (oc, sum) in (oc0..cout).zip(sums) {
            out[oc] = p.offsets::<L>()[oc].wrapping_add(sum) as f32;
        }
    }
}

/// [`Lanes::store`] for a set that reads its lanes out to memory (`sdot`, and the tests'
/// emulated instruction).
#[cfg(any(target_arch = "aarch64", test))]
fn store_lanes(lanes: [i32; 16], dst: &mut [f32]) {
    for (d, v) in dst.iter_mut().zip(lanes) {
        *d = v as f32;
    }
}

/// [`Lanes::store_pair_max`] for a set that reads its lanes out to memory (as above).
#[cfg(any(target_arch = "aarch64", test))]
fn store_pair_max_lanes(lanes: [i32; 16], dst: &mut [f32]) {
    for (d, pair) in dst.iter_mut().zip(lanes.chunks_exact(2)) {
        *d = pair[0].max(pair[1]) as f32;
    }
}

/// Sixteen i32 lanes and the four-way u8 x i8 dot product, on one instruction set. Every
/// method is `unsafe`: the CPU must have the instructions of the implementation. They are
/// inlined into kernels compiled for those instructions.
trait Lanes: Copy {
    /// The instruction multiplies signed input bytes: [`Lanes::load_input`] loads `u - 128`.
    const SIGNED: bool;
    /// Every lane `v`.
    unsafe fn splat(v: i32) -> Self;
    /// Lane `i` from bytes `4i..4i + 4` of the first sixty-four of `bytes` (panics on fewer).
    unsafe fn load(bytes: &[u8]) -> Self;
    /// [`Lanes::load`] of unsigned input bytes, each less 128 where [`Lanes::SIGNED`].
    unsafe fn load_input(bytes: &[u8]) -> Self;
    /// Per lane: `self + Σ_j input byte j * i8(weights byte j)`, wrapping; input bytes are u8,
    /// or i8 where [`Lanes::SIGNED`].
    unsafe fn dot(self, input: Self, weights: Self) -> Self;
    /// Per lane, the larger.
    unsafe fn max(self, other: Self) -> Self;
    /// The first `dst.len()` (at most sixteen) lanes, as f32.
    unsafe fn store(self, dst: &mut [f32]);
    /// The larger of lanes `2i` and `2i + 1`, as f32, for the first `dst.len()` (at most
    /// eight) `i`.
    unsafe fn store_pair_max(self, dst: &mut [f32]);
    /// The sum of the lanes, wrapping.
    unsafe fn sum(self) -> i32;
    /// The form the row kernel of this body multiplies.
    const FORM: Form = Form::Bytes;
    /// [`Rows::tile`] for this body: by default the generic one, over bytes.
    ///
    /// # Safety
    /// The CPU has the instructions this body uses.
    #[inline(always)]
    unsafe fn row_tile<const OB: usize, const R: usize>(
        rows: &Rows<'_>,
        block: usize,
        sub: usize,
        y: usize,
        x0: usize,
    ) -> [[Self; OB]; R] {
        // SAFETY: forwarded from the caller.
        unsafe { rows.tile::<Self, OB, R>(block, sub, y, x0) }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(target_arch = "aarch64")]
mod arm;
/// The `sdot` instruction, for the throughput probe ([`crate::peak`]).
#[cfg(target_arch = "aarch64")]
pub(crate) use arm::sdot;

/// A packed int8 convolution and the instruction set that runs it on this CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntConv {
    packed: Packed,
    isa: Isa,
}

impl IntConv {
    /// `packed` on this CPU's best dot-product instruction set; `None` on a CPU without one
    /// (the f32 loop runs the convolution).
    pub fn new(packed: Packed) -> Option<IntConv> {
        let isa = Isa::best()?;
        Some(IntConv { packed: packed.with_form(isa.form()), isa })
    }

    /// Added to an input integer to make it unsigned (0 or 128).
    pub fn shift(&self) -> i32 {
        self.packed.shift()
    }

    /// Convolves `n` images into `out` (`[n][cout][oh][ow]`, bias added, before
    /// requantisation), with `pool` max-pooled 2x2 with stride 2 (`[n][cout][oh / 2][ow /
    /// 2]`); `load(p, plane)` writes input plane `p` as unsigned bytes.
    pub fn run(
        &self,
        n: usize,
        pool: bool,
        mut load: impl FnMut(usize, &mut [u8]),
        out: &mut [f32],
        scratch: &mut IntScratch,
    ) {
        let (p, load, s) = (&self.packed, &mut load, scratch);
        match self.isa {
            // SAFETY: `Isa::best` found the instructions on this CPU.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => unsafe { x86::run_avx512(p, n, pool, load, out, s) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni => unsafe { x86::run_avx256(p, n, pool, load, out, s) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::run_avx2(p, n, pool, load, out, s) },
            // SAFETY: as above.
            #[cfg(target_arch = "aarch64")]
            Isa::Sdot => unsafe { arm::run_sdot(p, n, pool, load, out, s) },
        }
    }
}

#[cfg(test)]
mod tests;
