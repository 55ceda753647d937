//! Integration tests of the `edge-node` binary's library and the binary itself: real nodes
//! serving over HTTP, with the real plugin, models and generated certificates.

// Tests panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod demo;
mod filetype;
mod http;
mod kserve_clients;
mod kserve_upstream;
mod reload;
mod serve;
mod thresholds;
mod tiers;
