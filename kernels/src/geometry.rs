//! The shape of one convolution, and the tile and block sizes of the f32 kernels.

/// Output columns computed at once by the wide f32 kernels (one AVX-512 register, two AVX
/// ones).
pub(crate) const TILE: usize = 16;
/// Output channels per packed f32 weight block: the most any kernel uses; the others split
/// it.
pub(crate) const BLOCK: usize = 8;

/// Shape of one convolution, fixed at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Zero rows above the input.
    pub pad_top: usize,
    /// Zero columns left of the input.
    pub pad_left: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

impl ConvGeometry {
    /// Weights per output channel: `cin * kh * kw`.
    pub fn taps(&self) -> usize {
        self.cin * self.kh * self.kw
    }

    /// Tiles of sixteen output columns per output row.
    pub fn tiles(&self) -> usize {
        self.ow.div_ceil(TILE)
    }

    /// Rows of the padded input copy.
    pub fn padded_h(&self) -> usize {
        self.oh + self.kh - 1
    }

    /// Row stride of the padded input copy: wide enough for whole tiles at every tap.
    pub fn padded_w(&self) -> usize {
        (self.tiles() * TILE + self.kw - 1).max(self.pad_left + self.w)
    }

    /// Blocks of eight output channels in the packed f32 weights.
    pub(crate) fn blocks(&self) -> usize {
        self.cout.div_ceil(BLOCK)
    }
}
