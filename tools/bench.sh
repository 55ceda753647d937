#!/usr/bin/env bash
# Benchmarks, from a fresh machine: setup, a release build of the node and of the benchmark
# binary, then `cascade-bench <suite>`. Suites: sandbox, tiers, backends, kernels, edge, faults, device.
#   tools/bench.sh edge --json        # one figure per line
#   tools/bench.sh backends --quick   # fewer samples, the same figures
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: tools/bench.sh <sandbox|tiers|backends|kernels|edge|faults|device> [--json] [--quick] [suite flags]" >&2; exit 2; }
tools/setup.sh
cargo build --release --locked -p edge-node -p cascade-bench
exec target/release/cascade-bench "$@"
