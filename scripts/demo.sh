#!/usr/bin/env bash
# The main command: starts two denoisers and the orchestrator on loopback
# with the shipped model, streams the default grid into grid.png (and its
# sidecar grid.json), and says where. Builds first if needed.
#
#   scripts/demo.sh [--prompt sneaker] [--seed 7] [--preset classic] [--keep]
#
# --keep leaves the stack running (Ctrl-C stops it), e.g. to try
#   build/bin/dgrid promote grid.json --row 2 --col 3 --target=<orchestrator>
set -euo pipefail
cd "$(dirname "$0")/.."
prompt=sneaker
seed=7
preset=default
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --prompt) prompt=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --preset) preset=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "usage: scripts/demo.sh [--prompt NAME] [--seed N] [--preset default|classic] [--keep]" >&2
       exit 2 ;;
  esac
done

if [ ! -x build/bin/dgrid-orchestrator ] || [ ! -x build/bin/dgrid-denoiser ] || [ ! -x build/bin/dgrid ]; then
  scripts/install-deps.sh
  cmake --preset default
  cmake --build --preset default -j "$(nproc)"
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
  build/bin/dgrid-denoiser --model_dir=models/fashion-mnist --listen=127.0.0.1:0 \
    --metrics_addr=127.0.0.1:0 --threads=1 --port_file="$run/d$i" 2>"$run/d$i.log" &
  pids+=($!)
  denoisers+=("127.0.0.1:$(wait_ports "$run/d$i" $! "$run/d$i.log")")
done
build/bin/dgrid-orchestrator --denoisers="$(IFS=,; echo "${denoisers[*]}")" \
  --listen=127.0.0.1:0 --metrics_addr=127.0.0.1:0 --port_file="$run/o" 2>"$run/o.log" &
pids+=($!)
orchestrator="127.0.0.1:$(wait_ports "$run/o" $! "$run/o.log")"
echo "denoisers:    ${denoisers[*]}"
echo "orchestrator: $orchestrator (metrics: http://127.0.0.1:$(sed -n 's/^metrics=//p' "$run/o")/metrics)"

build/bin/dgrid grid --target="$orchestrator" --prompt="$prompt" --seed="$seed" \
  --preset="$preset" -o grid.png
echo "grid: $(pwd)/grid.png (cell paths and divergence: $(pwd)/grid.json)"

if [ "$keep" = 1 ]; then
  echo "stack running; Ctrl-C stops it"
  wait
fi
