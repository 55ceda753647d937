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
for g in "${guests[@]}" tools/bindgen; do cargo fmt --manifest-path "$g/Cargo.toml" --check; done
echo "==> cargo clippy, guest plugins (warnings are errors)" >&2
for g in "${guests[@]}"; do
  cargo clippy --manifest-path "$g/Cargo.toml" --locked --target-dir target/guest-lint -- -D warnings
done
# The workspace is linted while it is compiled for the tests, by tools/clippy-rustc (why: see
# there). First the gate itself: a file that rustc compiles and only clippy objects to must fail
# through the wrapper, or a wrapper that stopped linting would let every lint through unseen.
probe=$(mktemp -d)
printf 'fn main() {\n    let v = vec![1u8];\n    std::process::exit(v[0].into());\n}\n' >"$probe/probe.rs"
rustc --edition 2024 --out-dir "$probe" "$probe/probe.rs"
if tools/clippy-rustc rustc --edition 2024 --out-dir "$probe" "$probe/probe.rs" 2>/dev/null; then
  echo "tools/clippy-rustc compiled a file clippy rejects (clippy::useless_vec): it is not linting" >&2
  exit 1
fi
rm -rf "$probe"
echo "==> cargo test, the workspace linted by clippy as it compiles (warnings are errors)" >&2
cargo --config "build.rustc-workspace-wrapper='$PWD/tools/clippy-rustc'" test --workspace --locked
# The deployment files (deploy/): systemd unit, container recipe, Kubernetes manifests,
# alert rules and dashboard, checked against a live pair of nodes built by the tests.
echo "==> deployment checks (tools/check-deploy.sh)" >&2
tools/check-deploy.sh "${CARGO_TARGET_DIR:-target}/debug/edge-node"
