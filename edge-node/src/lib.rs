//! The Cascade node binary's library half: everything `edge-node`'s commands do, so that
//! integration tests and benchmarks can drive it directly.
//!
//! - [`demo`]: the main job, run by `edge-node demo`.
//! - [`figures`]: figures printed as `../shared/BENCH.md` asks.

pub mod demo;
pub mod figures;
