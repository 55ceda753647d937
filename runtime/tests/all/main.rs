//! Integration tests for `cascade-runtime`, one module per area.

// Tests panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admission;
mod backends;
mod cache;
mod config;
mod kserve;
mod node;
mod onnx_node;
mod reference_models;
mod sandbox;
mod tier_peers;
mod tiers;
