//! Tensors and confidences: the vocabulary the node shares with its guest plugins, defined
//! once in the `cascade-tensor` crate. A [`Tensor`] is validated when it is built, so every
//! holder can trust that its bytes fit its shape and element type.

pub(crate) use cascade_tensor::confidence;
pub use cascade_tensor::{DType, Tensor, TensorError, element_count};
