//! Buffers a convolution keeps from one run to the next.
//!
//! The tract backend pools run states per batch size (`backend/tract/mod.rs`), and each
//! [`super::DirectConv`] node's state owns one [`Scratch`]: a steady stream of requests
//! convolves without allocating anything but the node's output tensor. At batch 64 the
//! accumulators are megabytes, which the allocator would otherwise map and unmap, with a
//! page fault per 4 KiB, on every run.

/// The buffers of one convolution node.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scratch {
    /// Accumulators, when pooling or requantisation comes before the output.
    pub(super) acc: Vec<f32>,
    /// The f32 loop's zero-padded input planes.
    pub(super) padded: Vec<f32>,
    /// The f32 loop's one unpadded input plane.
    pub(super) plane: Vec<f32>,
    /// One image's convolution before pooling, where the kernel cannot pool as it stores.
    pub(super) image: Vec<f32>,
    /// One image's input tiles transformed for [`super::winograd`].
    pub(super) transformed: Vec<f32>,
    /// The integer kernels' buffers.
    pub(super) int: IntScratch,
}

/// The integer kernels' buffers ([`super::super::intconv`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct IntScratch {
    /// One image's input bytes, for the one-pixel dot layout.
    pub(crate) input: Vec<u8>,
    /// One unpadded input plane.
    pub(crate) plane: Vec<u8>,
    /// Padded input planes, the border at the input's zero point.
    pub(crate) padded: Vec<u8>,
    /// The input re-laid as quads of four channels.
    pub(crate) quads: Vec<u8>,
}

/// `buf` as `len` elements, filled with `fill` when its length changes and reused as it is
/// otherwise. Sound for buffers whose readers either read only what was written in the same
/// run or rely on `fill` where nothing writes (a padding border): a buffer belongs to one
/// node, whose padding value never changes.
pub(crate) fn sized<T: Copy>(buf: &mut Vec<T>, len: usize, fill: T) -> &mut [T] {
    if buf.len() != len {
        buf.clear();
        buf.resize(len, fill);
    }
    buf
}
