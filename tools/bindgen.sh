#!/usr/bin/env bash
# Regenerates the guest SDK's bindings after a change to its WIT world:
#
#   tools/bindgen.sh     writes guest-sdk/src/bindings.rs (and bindings/, a file per WIT
#                        interface) from guest-sdk/wit/plugin.wit
#
# The bindings are checked in, so that neither the host build nor a plugin build compiles
# wit-bindgen's macro and the WIT tooling behind it (about a minute of a cold plugin build).
# Its first line records the WIT file's sha256; the guest SDK's unit test
# `bindings_match_the_wit_file` fails, naming this script, when the WIT changes without it.
# The generator (tools/bindgen/) is pinned to the wit-bindgen version of the SDK's runtime.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet --locked --manifest-path tools/bindgen/Cargo.toml --target-dir target/bindgen -- guest-sdk
rustfmt --edition 2024 guest-sdk/src/bindings.rs
