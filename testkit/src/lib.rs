//! What Cascade's test suites share, in one place: the guest plugins built from source
//! once per test process, a deployment's certificates, the reference nodes' configs, the
//! test data, and small HTTP helpers. Test code: it panics on any failure, with the cause.
//!
//! Used by the integration tests of `cascade-runtime` and `edge-node` (never by unit tests
//! inside `cascade-runtime`, which would see a second copy of that crate's types).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod data;
mod fixture;
mod http;
mod python;

pub use data::{digits, hard_images, image_body, probabilities};
pub use fixture::{Fixture, Guest, central, edge, fixture, repo, resolve, write_config, write_file};
pub use http::{Response, assert_close, client, get_text, metric, output_values, post};
pub use python::{kserve_python_or_skip, onnx_python};
