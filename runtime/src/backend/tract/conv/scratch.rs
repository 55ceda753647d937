//! Buffers a convolution keeps from one run to the next.
//!
//! The tract backend pools run states per batch size (`backend/tract/mod.rs`), and each
//! [`super::DirectConv`] node's state owns one [`Scratch`]: a steady stream of requests
//! convolves without allocating anything but the node's output tensor. At batch 64 the
//! accumulators are megabytes, which the allocator would otherwise map and unmap, with a
//! page fault per 4 KiB, on every run.

use cascade_kernels::intconv::IntScratch;

/// The buffers of one convolution node.
#[derive(Debug, Clone, Default)]
pub(super) struct Scratch {
    /// Accumulators, when pooling or requantisation comes before the output.
    pub(super) acc: Vec<f32>,
    /// The f32 loop's zero-padded input planes.
    pub(super) padded: Vec<f32>,
    /// The f32 loop's one unpadded input plane.
    pub(super) plane: Vec<f32>,
    /// One image's convolution before pooling, where the kernel cannot pool as it stores.
    pub(super) image: Vec<f32>,
    /// One image's input tiles transformed for [`cascade_kernels::winograd`].
    pub(super) transformed: Vec<f32>,
    /// The integer kernels' buffers.
    pub(super) int: IntScratch,
}
