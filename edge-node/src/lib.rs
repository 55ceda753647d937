//! The Cascade node binary's library half: everything `edge-node`'s commands do, so that
//! integration tests and benchmarks can drive it directly.
//!
//! - [`bench_backends`]: `edge-node bench backends`, tract against onnxruntime.
//! - [`demo`]: the main job, run by `edge-node demo`.
//! - [`figures`]: figures printed as `../shared/BENCH.md` asks.

pub mod bench_backends;
pub mod demo;
pub mod figures;
