//! The Cascade node binary's library half: what `edge-node`'s commands do, so that the
//! integration tests and the benchmarks (`cascade-bench`) can drive it directly.
//!
//! - [`serve`]: `edge-node serve`, the KServe v2 HTTP front door and the admin API around a
//!   runtime [`cascade_runtime::Node`].
//! - [`check_cmd`]: `edge-node check`, validating a node config without serving.
//! - [`calibrate_cmd`]: `edge-node calibrate`, thresholds from evidence.
//! - [`certs_cmd`]: `edge-node certs init|issue`, certificates for mutual TLS between tiers.
//! - [`plugin_cmd`]: `edge-node plugin build`.
//! - [`demo`]: the main job, run by `edge-node demo`.
//! - [`deployment`]: the reference deployment's configs and `serve` processes on loopback.
//! - [`figures`]: figures printed one JSON object per line, or as a table.

pub mod calibrate_cmd;
pub mod certs_cmd;
pub mod check_cmd;
pub mod demo;
pub mod deployment;
pub mod figures;
/// The font the charts are laid out with (also the benchmarks').
pub mod font;
pub mod plugin_cmd;
pub mod serve;
