#!/usr/bin/env bash
# Sets up a fresh machine to build and test Cascade. Idempotent: run it as often as you like.
#
#   1. the wasm guest toolchain (plugins are Rust compiled to wasm32-unknown-unknown):
#        rustup's wasm32-unknown-unknown target when it is installed, otherwise Debian's
#        rustc-web + rust-web-src + lld, used with -Zbuild-std (the route guest_build.rs documents);
#   2. lavapipe (Vulkan on the CPU), so the wgpu backend runs on machines without a GPU;
#   3. a Python venv at target/peer-venv with onnxruntime, onnx, magika and the `kserve` model
#      server: the peers the benchmarks compare against (tools/peer-requirements.txt) and the
#      real KServe v2 upstream the tests start (tools/kserve-requirements.txt);
#   4. third-party models taken from those packages, never committed: Magika's content-type
#      model at target/third-party/magika_standard_v3_3.onnx, for examples/filetype-detector. `--bench-peer` is accepted for
#      older instructions; the venv is part of every run now.
#
# Each step says what it does, and on failure what you can run instead.
set -euo pipefail

for arg in "$@"; do
  case "$arg" in
    --bench-peer) ;; # the peer venv is installed by every run now
    *) echo "usage: tools/setup.sh [--bench-peer]" >&2; exit 2 ;;
  esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
step() { printf '\n==> %s\n' "$*" >&2; }
fail() { printf '\nsetup failed: %s\n' "$*" >&2; exit 1; }

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || fail "not root and no sudo: run this script as root"
  sudo_cmd=(sudo)
fi

apt_updated=0
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && { echo "already installed: $*" >&2; return 0; }
  command -v apt-get >/dev/null || fail "need Debian packages ${missing[*]}, but this machine has no apt-get"
  if [ $apt_updated -eq 0 ]; then
    "${sudo_cmd[@]}" apt-get update -qq || fail "apt-get update failed; run: sudo apt-get update"
    apt_updated=1
  fi
  echo "installing: ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null \
    || fail "could not install ${missing[*]}; run: sudo apt-get install -y ${missing[*]}"
}

step "wasm guest toolchain (wasm32-unknown-unknown)"
if command -v rustup >/dev/null && rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  echo "rustup has wasm32-unknown-unknown: plugins build with plain cargo" >&2
else
  echo "rustup has no wasm32-unknown-unknown std here; using Debian's Rust with -Zbuild-std" >&2
  echo "(with internet access, 'rustup target add wasm32-unknown-unknown' replaces this step)" >&2
  apt_install rustc-web cargo-web rust-web-src lld
  [ -x /usr/bin/cargo ] && [ -x /usr/bin/rustc ] || fail "Debian's rustc-web did not install /usr/bin/cargo and /usr/bin/rustc"
  command -v wasm-ld >/dev/null || fail "no wasm-ld after installing lld; run: sudo apt-get install -y lld"
  sysroot=$(/usr/bin/rustc --print sysroot)
  [ -d "$sysroot/lib/rustlib/src/rust/library" ] \
    || fail "no Rust std sources under $sysroot; run: sudo apt-get install -y rust-web-src"
  echo "guest toolchain: $(/usr/bin/rustc --version), std sources in $sysroot/lib/rustlib/src" >&2
fi

step "lavapipe (Vulkan on the CPU) for the wgpu backend"
apt_install mesa-vulkan-drivers libvulkan1

step "a font for the charts, and headless Chromium for the test that renders the demo report"
apt_install fonts-dejavu-core chromium

step "Python venv for the benchmark peers and the KServe upstream tests (target/peer-venv)"
venv="$root/target/peer-venv"
requirements=(-r "$root/tools/peer-requirements.txt" -r "$root/tools/kserve-requirements.txt")
if ! "$venv/bin/python" -c 'import onnx, onnxruntime, kserve, starlette, uvicorn, magika' 2>/dev/null; then
  # `python -m pip`, not `bin/pip`: a venv copied from another path keeps scripts that point
  # at that path. pip only adds what is missing from an existing venv.
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv" || fail "python3 -m venv failed; install python3-venv"
  echo "installing pinned packages (kserve pulls in fastapi, grpcio, pandas: about a minute the first time)" >&2
  # pip unpacks wheels in $TMPDIR and keeps a cache in ~/.cache: on machines where /tmp or the
  # home directory is a small partition that runs out of space (ENOSPC), so both stay under
  # target/, on the disk that must hold the build anyway, and no cache is kept.
  pip_tmp="$root/target/tmp/pip"
  mkdir -p "$pip_tmp"
  TMPDIR="$pip_tmp" PIP_NO_CACHE_DIR=1 "$venv/bin/python" -m pip install -q --disable-pip-version-check "${requirements[@]}" \
    || fail "pip install failed ($(df -h --output=avail "$root/target" | tail -1 | tr -d ' ') free under target/); run: TMPDIR=$pip_tmp $venv/bin/python -m pip install --no-cache-dir -r tools/peer-requirements.txt -r tools/kserve-requirements.txt"
  rm -rf "$pip_tmp"
fi
versions=$("$venv/bin/python" -c 'from importlib.metadata import version as v; print("onnxruntime", v("onnxruntime"), "kserve", v("kserve"))') \
  || fail "the venv at $venv does not import; remove it and run this script again"
echo "venv: $versions" >&2

step "third-party models from those packages (target/third-party)"
magika_model=$("$venv/bin/python" -c 'import magika, os; print(os.path.join(os.path.dirname(magika.__file__), "models", "standard_v3_3", "model.onnx"))') \
  || fail "the venv has no magika package; run: $venv/bin/python -m pip install -r tools/peer-requirements.txt"
mkdir -p "$root/target/third-party"
cp "$magika_model" "$root/target/third-party/magika_standard_v3_3.onnx" \
  || fail "cannot copy $magika_model; reinstall magika: $venv/bin/python -m pip install --force-reinstall magika==1.0.3"
echo "magika model: target/third-party/magika_standard_v3_3.onnx (Apache-2.0, from the magika package)" >&2

step "setup done"
