//! Integration tests for `cascade-runtime`, one module per area.

// Tests panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backends;
mod kserve;
mod reference_models;
mod sandbox;
mod serve_core;
mod tiers;
