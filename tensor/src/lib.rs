//! The vocabulary Cascade's host and its guest plugins share: tensors and confidences.
//!
//! One definition for both sides of the sandbox: the node (`cascade-runtime`) and the guest
//! SDK (`cascade-guest-sdk`, compiled to wasm32) depend on this crate, so a tensor means the
//! same on either side of the WIT boundary, and a confidence is computed the same way by a
//! plugin, by a KServe upstream's answer and by a calibration run. No dependencies unless
//! the `serde` feature is on (guests are built with std, so this crate uses it too).
//!
//! ```
//! use cascade_tensor::{DType, Tensor, confidence};
//!
//! let logits = Tensor::from_f32(vec![1, 3], &[2.0, 0.5, -1.0])?;
//! let probs = confidence::softmax(&logits.to_f32()?);
//! assert_eq!(confidence::argmax(&probs), Some(0));
//! assert!(confidence::max_probability(&probs) > 0.7);
//! assert_eq!(logits.dtype(), DType::F32);
//! # Ok::<(), cascade_tensor::TensorError>(())
//! ```

pub mod confidence;
mod dtype;
mod tensor;

pub use dtype::DType;
pub use tensor::{Tensor, TensorError, element_count};
