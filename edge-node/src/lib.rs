//! The Cascade node binary's library half: everything `edge-node`'s commands do, so that
//! integration tests and benchmarks can drive it directly.
//!
//! - [`demo`]: the main job, run by `edge-node demo`.
//! - [`plugin_cmd`]: `edge-node plugin build`.
//! - [`bench_sandbox`]: `edge-node bench sandbox`.
//! - [`figures`]: figures printed as `../shared/BENCH.md` asks.

pub mod bench_sandbox;
pub mod demo;
pub mod figures;
pub mod plugin_cmd;
