//! Turning a model's scores into a class and a confidence in [0, 1].
//!
//! The host computes confidences with the same functions (they live in `cascade-tensor`),
//! so a plugin's max-probability and the node's, for a KServe upstream's scores, agree.
//! Max-probability, margin and entropy each separate right from wrong answers; `edge-node
//! calibrate` compares them on a route's own traffic.

pub use cascade_tensor::confidence::{argmax, entropy_confidence, margin, max_probability, softmax};
