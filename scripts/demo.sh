#!/usr/bin/env bash
# The main command: starts two denoisers and the orchestrator on loopback
# with the shipped model, streams the default grid into grid.png (and its
# sidecar grid.json), and says where, with the explorer page's URL. Builds
# first if needed.
#
#   scripts/demo.sh [--model DIR]... [--prompt TEXT] [--negative TEXT] [--seed 7]
#                   [--preset classic] [--keep] [--monitor]
#
# By default the denoisers serve both shipped bundles, models/emoji (text to
# image, the grid's model) and models/fashion-mnist (the explorer switches
# between them). --model serves other bundle folders instead (a class or a
# text model; repeat it for several); the grid uses the first. A text
# model's prompt defaults to the first of its manifest's example prompts.
# --keep leaves the stack running (Ctrl-C stops it), to use the page or e.g.
#   build/bin/dgrid promote grid.json --row 2 --col 3 --target=<orchestrator>
# --monitor also starts Prometheus (Debian's package) on a free loopback port with
# deploy/prometheus's scrape config and rules, scraping the stack; implies --keep.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${DGRID_MODEL_DIR:-}" ]; then
  models=("$DGRID_MODEL_DIR")
else
  models=(models/emoji models/fashion-mnist)
fi
models_set=0
prompt=
prompt_set=0
negative=
seed=7
preset=default
keep=0
monitor=0
while [ $# -gt 0 ]; do
  case "$1" in
    --model|--prompt|--negative|--seed|--preset)
      [ $# -ge 2 ] || { echo "demo: $1 needs a value" >&2; exit 2; } ;;
  esac
  case "$1" in
    --model)
      [ "$models_set" = 1 ] || models=()
      models+=("$2"); models_set=1; shift 2 ;;
    --prompt) prompt=$2; prompt_set=1; shift 2 ;;
    --negative) negative=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --preset) preset=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --monitor) monitor=1; keep=1; shift ;;
    *) echo "usage: scripts/demo.sh [--model DIR] [--prompt TEXT] [--negative TEXT] [--seed N] [--preset default|classic|euler_a|turbo] [--keep] [--monitor]" >&2
       exit 2 ;;
  esac
done
for dir in "${models[@]}"; do
  [ -f "$dir/manifest.json" ] || { echo "demo: no bundle at $dir (manifest.json missing)" >&2; exit 2; }
done
# Dependencies first (the prompt below is read with Python), on a machine
# that lacks the build or its tools; then the build, a no-op when up to date,
# so a pulled tree never runs stale binaries. A built machine needs no
# package registry.
if [ ! -f build/build.ninja ] || ! command -v cmake >/dev/null || ! command -v ninja >/dev/null ||
   [ ! -x /usr/bin/python3 ]; then
  scripts/install-deps.sh
fi
[ -f build/build.ninja ] || cmake --preset default
cmake --build --preset default -j "$(nproc)"
model=${models[0]}
model_name=$(/usr/bin/python3 -c 'import json, sys; print(json.load(open(sys.argv[1] + "/manifest.json"))["name"])' "$model")
if [ "$prompt_set" = 0 ]; then
  # A class model's demo prompt, or a text model's first example.
  prompt=$(/usr/bin/python3 -c '
import json, sys
m = json.load(open(sys.argv[1] + "/manifest.json"))
c = m.get("conditioning", {})
if c.get("kind") == "text":
    print((c.get("example_prompts") or [""])[0])
else:
    labels = c.get("class_labels") or c.get("classLabels") or []
    print("sneaker" if "sneaker" in labels else (labels[0] if labels else ""))
' "$model")
fi

run=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$run"
}
trap cleanup EXIT

# Waits for a server's port file; prints its gRPC port.
wait_ports() {
  local file=$1 pid=$2 log=$3
  for _ in $(seq 600); do
    [ -s "$file" ] && { sed -n 's/^grpc=//p' "$file"; return; }
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.1
  done
  echo "timed out waiting for $file" >&2
  exit 1
}

# One core's worth of torch threads per replica on this 2-core machine.
denoisers=()
for i in 0 1; do
  build/bin/dgrid-denoiser "${models[@]/#/--model_dir=}" --listen=127.0.0.1:0 \
    --metrics_addr=127.0.0.1:0 --threads=1 --port_file="$run/d$i" 2>"$run/d$i.log" &
  pids+=($!)
  denoisers+=("127.0.0.1:$(wait_ports "$run/d$i" $! "$run/d$i.log")")
done
build/bin/dgrid-orchestrator --denoisers="$(IFS=,; echo "${denoisers[*]}")" \
  --listen=127.0.0.1:0 --metrics_addr=127.0.0.1:0 --http_addr=127.0.0.1:0 \
  --web_dir=clients/web --port_file="$run/o" 2>"$run/o.log" &
pids+=($!)
orchestrator="127.0.0.1:$(wait_ports "$run/o" $! "$run/o.log")"
echo "denoisers:    ${denoisers[*]}"
echo "orchestrator: $orchestrator (metrics: http://127.0.0.1:$(sed -n 's/^metrics=//p' "$run/o")/metrics)"
echo "explorer:     http://127.0.0.1:$(sed -n 's/^http=//p' "$run/o")/"

if [ "$monitor" = 1 ]; then
  command -v prometheus >/dev/null || scripts/install-deps.sh
  mkdir -p "$run/prometheus/targets"
  cp -r deploy/prometheus/prometheus.yml deploy/prometheus/rules "$run/prometheus/"
  targets() { for f in "$@"; do printf '"127.0.0.1:%s",' "$(sed -n 's/^metrics=//p' "$f")"; done; }
  d=$(targets "$run/d0" "$run/d1")
  echo "[{\"targets\": [${d%,}]}]" > "$run/prometheus/targets/dgrid-denoiser.json"
  o=$(targets "$run/o")
  echo "[{\"targets\": [${o%,}]}]" > "$run/prometheus/targets/dgrid-orchestrator.json"
  # A free loopback port (Debian's prometheus service may hold 9090).
  prom_port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  prometheus --config.file="$run/prometheus/prometheus.yml" \
    --storage.tsdb.path="$run/prometheus/data" --web.listen-address="127.0.0.1:$prom_port" \
    2>"$run/prometheus.log" &
  pids+=($!)
  prom_pid=$!
  for _ in $(seq 300); do
    curl -fs "http://127.0.0.1:$prom_port/-/ready" >/dev/null 2>&1 && break
    kill -0 "$prom_pid" 2>/dev/null || { echo "demo: prometheus exited:" >&2; cat "$run/prometheus.log" >&2; exit 1; }
    sleep 0.1
  done
  curl -fs "http://127.0.0.1:$prom_port/-/ready" >/dev/null 2>&1 ||
    { echo "demo: prometheus not ready after 30 s:" >&2; tail -n 20 "$run/prometheus.log" >&2; exit 1; }
  echo "prometheus:   http://127.0.0.1:$prom_port/ (targets: /targets, alerts: /alerts)"
  echo "grafana:      import deploy/grafana/dgrid-dashboard.json into any Grafana, data source http://127.0.0.1:$prom_port"
fi

negative_flag=()
[ -n "$negative" ] && negative_flag=(--negative="$negative")
build/bin/dgrid grid --target="$orchestrator" --model="$model_name" --prompt="$prompt" "${negative_flag[@]}" --seed="$seed" \
  --preset="$preset" -o grid.png
echo "grid: $(pwd)/grid.png (cell paths and divergence: $(pwd)/grid.json)"

if [ "$keep" = 1 ]; then
  echo "stack running; Ctrl-C stops it"
  wait
fi
