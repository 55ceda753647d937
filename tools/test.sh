#!/usr/bin/env bash
# The whole test suite, from a fresh machine: setup, formatting, lints, every test.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
# Guest plugins are workspaces of their own (built for wasm32 by the tests); format and lint
# them too, for the host target, in one shared target directory.
guests=(examples/mnist-classifier examples/filetype-detector runtime/tests/plugins/hostile)
echo "==> cargo fmt --check" >&2
cargo fmt --all --check
for g in "${guests[@]}"; do cargo fmt --manifest-path "$g/Cargo.toml" --check; done
echo "==> cargo clippy, guest plugins (warnings are errors)" >&2
for g in "${guests[@]}"; do
  cargo clippy --manifest-path "$g/Cargo.toml" --locked --target-dir target/guest-lint -- -D warnings
done
# The workspace is linted while it is compiled for the tests: tools/clippy-rustc (clippy-driver,
# warnings as errors) compiles the workspace's own crates, plain rustc the dependencies, which
# are thus built once instead of twice (a separate `cargo clippy` builds them all again in check
# mode). `cargo test` compiles every target `cargo clippy --all-targets` would check. A plain
# `cargo test` afterwards recompiles only the workspace's own crates.
echo "==> cargo test, the workspace linted by clippy as it compiles (warnings are errors)" >&2
cargo --config "build.rustc-workspace-wrapper='$PWD/tools/clippy-rustc'" test --workspace --locked
# The deployment files (deploy/): systemd unit, container recipe, Kubernetes manifests,
# alert rules and dashboard, checked against a live pair of nodes built by the tests.
echo "==> deployment checks (tools/check-deploy.sh)" >&2
tools/check-deploy.sh "${CARGO_TARGET_DIR:-target}/debug/edge-node"
