#!/usr/bin/env bash
# The device build for aarch64 (README, "On devices"), cross-compiled on this machine and run
# under qemu-user:
#
#   tools/cross.sh           build, test the CPU kernels under qemu, compare answers with x86_64
#
#   1. cross-builds `edge-node` for aarch64-unknown-linux-gnu with the `device` profile and no
#      default features (no wgpu, no plugin compiler), into target/cross/, and prints its
#      size as `device.aarch64.binary_bytes`;
#   2. runs the kernels' and the runtime's unit tests there, under qemu-aarch64: the portable
#      paths of our convolution kernels, the `sdot` int8 kernel (qemu's CPU has the
#      dot-product extension) and tract's NEON kernels are what run on aarch64;
#   3. runs `edge-node demo --models-only --json --limit 500` under qemu and on this machine, and checks
#      that each model's accuracy, size and work are the same (latencies are not compared:
#      qemu emulates);
#   4. precompiles the mnist-classifier plugin for aarch64 (`plugin build --target`), serves
#      it from the aarch64 node under qemu and from an x86_64 node, and checks that both give
#      the same answers to the same digits (tools/same_answers.py).
#
# Toolchain: Debian's cross gcc (linker) and qemu-user-static. If rustup has the aarch64 std
# (`rustup target add aarch64-unknown-linux-gnu`), plain cargo builds it; otherwise Debian's
# Rust builds std from source (`-Zbuild-std`), the route the wasm guests take.
# Not part of tools/test.sh: the cross build compiles the whole dependency tree again, with
# fat LTO (about 25 minutes on 2 cores), and qemu runs the tests some ten times slower.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
target=aarch64-unknown-linux-gnu
step() { printf '\n==> %s\n' "$*" >&2; }
fail() { printf '\ncross.sh failed: %s\n' "$*" >&2; exit 1; }

tools/setup.sh
step "cross toolchain: Debian's gcc-aarch64-linux-gnu and qemu-user-static"
missing=()
for pkg in gcc-aarch64-linux-gnu qemu-user-static; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
    || fail "could not install ${missing[*]}; run: sudo apt-get install -y ${missing[*]}"
fi
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64-static -L /usr/aarch64-linux-gnu"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
# Its own target directory: Debian's rustc is another compiler than rustup's.
export CARGO_TARGET_DIR="$root/target/cross"
if command -v rustup >/dev/null && rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  cross_cargo=(cargo)
else
  echo "rustup has no $target std here: Debian's Rust builds it from source (-Zbuild-std)" >&2
  dpkg-query -W -f='${Status}' rust-web-src 2>/dev/null | grep -q "install ok installed" \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rustc-web cargo-web rust-web-src >/dev/null; } \
    || fail "could not install Debian's Rust; run: sudo apt-get install -y rustc-web cargo-web rust-web-src"
  cross_cargo=(env RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 /usr/bin/cargo)
  build_std=(-Zbuild-std)
fi
cross() { "${cross_cargo[@]}" "$@" --locked --target "$target" ${build_std[@]+"${build_std[@]}"}; }

step "cargo build --profile device -p edge-node --no-default-features --target $target"
cross build --profile device -p edge-node --no-default-features
bin="$CARGO_TARGET_DIR/$target/device/edge-node"
file "$bin" 2>/dev/null | grep -q aarch64 || [ "$(od -An -tu2 -j18 -N2 "$bin" | tr -d ' ')" = 183 ] \
  || fail "$bin is not an aarch64 executable"
printf '{"figure":"device.aarch64.binary_bytes","value":%s,"unit":"bytes"}\n' "$(stat -c %s "$bin")"
qemu=(qemu-aarch64-static -L /usr/aarch64-linux-gnu)

step "the kernels' and the runtime's unit tests on aarch64, under qemu (CPU kernels, models, config)"
cross test --profile device -p cascade-kernels -p cascade-runtime --no-default-features --lib

step "this machine's edge-node, for the reference answers and to precompile the plugin"
unset CARGO_TARGET_DIR
cargo build --release --locked -p edge-node
host_bin="$root/target/release/edge-node"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

step "edge-node demo --models-only --json: under qemu (aarch64) and here ($(uname -m))"
"${qemu[@]}" "$bin" demo --models-only --json --latency-samples 20 --limit 500 >"$work/aarch64.json"
"$host_bin" demo --models-only --json --latency-samples 20 --limit 500 >"$work/host.json"
python3 - "$work/host.json" "$work/aarch64.json" <<'EOF'
import json, sys
def figures(path):
    # Latencies measure the machine (and qemu), not the answers.
    return {f["figure"]: f["value"] for f in map(json.loads, open(path)) if not f["figure"].endswith("_us")}
host, arm = figures(sys.argv[1]), figures(sys.argv[2])
for name in sorted(host):
    print(f"  {name:40} {host[name]:>12} {arm.get(name)!s:>12}", file=sys.stderr)
if host != arm:
    sys.exit("the models' figures differ between x86_64 and aarch64")
print(json.dumps({"check": "demo_models_only", "figures": len(host), "same": True}))
EOF

step "a plugin request through the sandbox: precompiled for aarch64 under qemu, and here"
"$host_bin" plugin build examples/mnist-classifier -o "$work/mnist.wasm" --target "$target"
ports=$(python3 -c 'import socket
s=[socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1",0)) for x in s]
print(*[x.getsockname()[1] for x in s])')
read -r host_port arm_port <<<"$ports"
node_config() { # name port plugin
  cat <<EOF
[node]
name = "$1"
[listeners]
http = "127.0.0.1:$2"
[models.edge]
path = "$root/models/edge_int8.onnx"
backend = "tract"
[plugins.mnist]
path = "$3"
models = ["edge"]
deadline_ms = 5000
[plugins.mnist.config]
model = "edge"
[routes.digits]
plugin = "mnist"
deadline_ms = 10000
cache_ttl_s = 0
inputs = [{ name = "image", datatype = "UINT8", shape = [28, 28] }]
outputs = [{ name = "probabilities", datatype = "FP32", shape = [1, 10] }]
[routes.digits.thresholds]
normal = 0.0
surge = 0.0
emergency = 0.0
EOF
}
node_config host "$host_port" "$work/mnist.wasm" >"$work/host.toml"
node_config aarch64 "$arm_port" "$work/mnist.$target.cwasm" >"$work/aarch64.toml"
"$host_bin" serve --config "$work/host.toml" >"$work/host.log" 2>&1 &
"${qemu[@]}" "$bin" serve --config "$work/aarch64.toml" >"$work/aarch64.log" 2>&1 &
# Under qemu the node takes 40 s or more to start on a quiet machine (most of it wasmtime
# setting up its instance pool), so each node gets three minutes.
for port in "$host_port" "$arm_port"; do
  for _ in $(seq 1800); do
    curl -sf "http://127.0.0.1:$port/v2/health/ready" >/dev/null && break
    sleep 0.1
  done
  curl -sf "http://127.0.0.1:$port/v2/health/ready" >/dev/null \
    || { tail -n 20 "$work"/*.log >&2; fail "the node on port $port was not ready within 180 s"; }
done
python3 tools/same_answers.py "http://127.0.0.1:$host_port" "http://127.0.0.1:$arm_port" 200
echo "aarch64: the device build answers as x86_64 does" >&2
