#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of the parsers an attacker reaches; the
# targets are in fuzz/fuzz_targets/ (each file's doc says what it feeds and checks).
#
#   tools/fuzz.sh                      every target, one after another
#   tools/fuzz.sh kserve_request ...   only these
#
#   FUZZ_SECONDS    how long each target runs (default 1800)
#   FUZZ_JOBS       how many targets run at once (default 1; each uses one core)
#   FUZZ_SANITIZER  address (default) or none: cargo-fuzz's --sanitizer
#   FUZZ_RSS_MB     libFuzzer's -rss_limit_mb (default 1024): a target using more has failed
#   FUZZ_MALLOC_MB  libFuzzer's -malloc_limit_mb (default 64): one allocation this large has
#                   failed (needs AddressSanitizer's malloc hooks: ignored with `none`)
#
# Prints per target the executions, the coverage (libFuzzer's covered edges and features)
# and any crash with its input, and exits non-zero if any target crashed. Corpora grow in
# fuzz/corpus/<target>/ (seeded from fuzz/seeds/<target>/), crashes land in
# fuzz/artifacts/<target>/ with the run's log; all of that, and the build in fuzz/target/,
# is ignored by git. To replay one input:
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz --target-dir fuzz/target TARGET FILE
# and to shrink a crash:
#   RUSTC_BOOTSTRAP=1 cargo fuzz tmin --fuzz-dir fuzz --target-dir fuzz/target TARGET FILE
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-1800}
jobs=${FUZZ_JOBS:-1}
sanitizer=${FUZZ_SANITIZER:-address}
rss_mb=${FUZZ_RSS_MB:-1024}
malloc_mb=${FUZZ_MALLOC_MB:-64}

# cargo-fuzz passes nightly-only flags (-Zsanitizer, sanitizer coverage); RUSTC_BOOTSTRAP lets
# the stable toolchain accept them, so no nightly is needed.
export RUSTC_BOOTSTRAP=1
fuzz=(--fuzz-dir fuzz --target-dir fuzz/target --sanitizer "$sanitizer")

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi

echo "==> building ${targets[*]} (sanitizer: $sanitizer)" >&2
if [ $# -gt 0 ]; then
  for t in "${targets[@]}"; do cargo fuzz build "${fuzz[@]}" "$t"; done
else
  cargo fuzz build "${fuzz[@]}"
fi

bin_dir="fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release"

dict_for() {
  case "$1" in
    kserve_request | kserve_response) echo fuzz/dicts/kserve.dict ;;
    config_parse) echo fuzz/dicts/config.dict ;;
  esac
}

# One target for $seconds; its log goes to fuzz/artifacts/<target>/fuzz.log.
run_one() {
  local t=$1 dict
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  local corpora=("fuzz/corpus/$t")
  [ -d "fuzz/seeds/$t" ] && corpora+=("fuzz/seeds/$t")
  local args=(-max_total_time="$seconds" -rss_limit_mb="$rss_mb" -timeout=30 -print_final_stats=1)
  [ "$sanitizer" = address ] && args+=(-malloc_limit_mb="$malloc_mb")
  dict=$(dict_for "$t")
  [ -n "$dict" ] && args+=(-dict="$dict")
  # A run that finds nothing exits 0; a crash, a leak, a timeout or going over a memory
  # limit exits non-zero, with the input saved under fuzz/artifacts/<t>/.
  local rc=0
  # The binary built above, not `cargo fuzz run` (which would rebuild from whatever the
  # sources are when the target's turn comes).
  ASAN_OPTIONS=detect_odr_violation=0 "$bin_dir/$t" -artifact_prefix="fuzz/artifacts/$t/" \
    "${args[@]}" "${corpora[@]}" >"fuzz/artifacts/$t/fuzz.log" 2>&1 || rc=$?
  echo "$rc" >"fuzz/artifacts/$t/exit-code"
}

# What a finished run found, from its log, on one line (and the crash's lines after it).
report() {
  local t=$1 status=$2 log="fuzz/artifacts/$t/fuzz.log" last execs rate
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  [ -n "$execs" ] || execs=$(sed -E -n 's/^#([0-9]+).*/\1/p' <<<"$last")
  local cov ft corp
  cov=$(sed -E -n 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")
  ft=$(sed -E -n 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")
  corp=$(sed -E -n 's/.* corp: ([0-9]+\/[0-9a-zA-Z]+).*/\1/p' <<<"$last")
  printf '%-16s %-6s executions %-10s (%s/s)  coverage: %s edges, %s features  corpus %s\n' \
    "$t" "$([ "$status" -eq 0 ] && echo ok || echo FAILED)" "${execs:-?}" "${rate:-?}" \
    "${cov:-?}" "${ft:-?}" "${corp:-?}"
  if [ "$status" -ne 0 ]; then
    grep -E -m1 -A3 "panicked at|^==[0-9]+==ERROR|ERROR: libFuzzer|SUMMARY: libFuzzer" "$log" | sed 's/^/    /' || true
    grep -E "Test unit written to" "$log" | sed "s/^.*Test unit written to /    input: /" || true
    echo "    log: $log"
  fi
}

echo "==> fuzzing ${#targets[@]} target(s), ${seconds}s each, $jobs at a time" >&2
pending=("${targets[@]}")
running=()
for t in "${targets[@]}"; do rm -f "fuzz/artifacts/$t/exit-code"; done
while [ ${#pending[@]} -gt 0 ] || [ ${#running[@]} -gt 0 ]; do
  while [ ${#pending[@]} -gt 0 ] && [ ${#running[@]} -lt "$jobs" ]; do
    t=${pending[0]}
    pending=("${pending[@]:1}")
    echo "    $t: running (log: fuzz/artifacts/$t/fuzz.log)" >&2
    run_one "$t" &
    running+=("$!")
  done
  wait -n 2>/dev/null || true
  still=()
  for pid in "${running[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then still+=("$pid"); fi
  done
  running=("${still[@]+"${still[@]}"}")
done
wait

echo
failed=0
for t in "${targets[@]}"; do
  rc=$(cat "fuzz/artifacts/$t/exit-code" 2>/dev/null || echo 1)
  report "$t" "$rc"
  [ "$rc" -eq 0 ] || failed=1
done
exit $failed
