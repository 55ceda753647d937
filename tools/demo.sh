#!/usr/bin/env bash
# The main job, from a fresh machine: setup, a release build, then `edge-node demo`.
# Extra arguments go to `edge-node demo` (e.g. --json).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
cargo build --release --locked -p edge-node
exec target/release/edge-node demo "$@"
