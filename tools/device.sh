#!/usr/bin/env bash
# The CPU-only device build (README, "On devices"): wgpu and the plugin compiler left out
# (`--no-default-features`; it loads only precompiled plugins),
# built with the `device` profile (fat LTO, one codegen unit, stripped).
#
#   tools/device.sh          lint and test the CPU-only configuration, build it, print its size
#
# Not part of tools/test.sh: a build without the `gpu` feature unifies the dependencies'
# features differently, so it compiles most of the dependency tree a second time (about
# 11 minutes on 2 cores for the lint and the test alone), and the LTO build takes longer.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
echo "==> cargo clippy, CPU-only (warnings are errors)" >&2
cargo clippy -p cascade-runtime -p edge-node --no-default-features --locked -- -D warnings
echo "==> what a CPU-only build does with a model configured for wgpu" >&2
cargo test -p cascade-runtime --no-default-features --locked --lib without_
echo "==> cargo build --profile device -p edge-node --no-default-features" >&2
cargo build --profile device -p edge-node --no-default-features --locked
bin=target/device/edge-node
bytes=$(stat -c %s "$bin")
printf '{"figure":"device.%s.binary_bytes","value":%s,"unit":"bytes"}\n' "$(uname -m)" "$bytes"
