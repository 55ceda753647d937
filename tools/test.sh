#!/usr/bin/env bash
# The whole test suite, from a fresh machine: setup, formatting, lints, every test.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
echo "==> cargo fmt --check" >&2
cargo fmt --all --check
echo "==> cargo clippy (warnings are errors)" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo test" >&2
cargo test --workspace --locked
