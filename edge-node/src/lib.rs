//! The Cascade node binary's library half: everything `edge-node`'s commands do, so that
//! integration tests and benchmarks can drive it directly.
//!
//! - [`check_cmd`]: `edge-node check`, validating a node config without serving.
//! - [`bench_backends`]: `edge-node bench backends`, tract against onnxruntime.
//! - [`demo`]: the main job, run by `edge-node demo`.
//! - [`plugin_cmd`]: `edge-node plugin build`.
//! - [`bench_sandbox`]: `edge-node bench sandbox`.
//! - [`bench_edge`]: `edge-node bench edge`, a whole node over HTTP against a Python server.
//! - [`certs_cmd`]: `edge-node certs init|issue`, certificates for mutual TLS between tiers.
//! - [`deployment`]: node configs and `serve` processes on loopback, for the demo and benches.
//! - [`figures`]: figures printed as `../shared/BENCH.md` asks.
//! - [`loadgen`]: the benchmarks' lean HTTP/1.1 client and open-loop load generator.
//! - [`serve`]: `edge-node serve`, the HTTP front door and the request path.
//! - [`tiers_bench`]: `edge-node bench tiers`, the cost of an escalation on loopback.

pub mod backend_check;
pub mod bench_backends;
pub mod bench_edge;
pub mod bench_sandbox;
pub mod certs_cmd;
pub mod check_cmd;
pub mod demo;
pub mod deployment;
pub mod figures;
pub mod loadgen;
pub mod plugin_cmd;
pub mod serve;
pub mod tiers_bench;
