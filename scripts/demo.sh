#!/usr/bin/env bash
# The main command: starts a denoiser on loopback with the shipped model and
# draws one trajectory through it. Builds first if needed.
#
#   scripts/demo.sh [--prompt sneaker] [--seed 7]
set -euo pipefail
cd "$(dirname "$0")/.."
prompt=sneaker
seed=7
while [ $# -gt 0 ]; do
  case "$1" in
    --prompt) prompt=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    *) echo "usage: scripts/demo.sh [--prompt NAME] [--seed N]" >&2; exit 2 ;;
  esac
done

if [ ! -x build/bin/dgrid-denoiser ] || [ ! -x build/bin/dgrid ]; then
  scripts/install-deps.sh
  cmake --preset default
  cmake --build --preset default -j "$(nproc)"
fi

run=$(mktemp -d)
cleanup() {
  [ -n "${denoiser:-}" ] && kill "$denoiser" 2>/dev/null && wait "$denoiser" 2>/dev/null
  rm -rf "$run"
}
trap cleanup EXIT

build/bin/dgrid-denoiser --model_dir=models/fashion-mnist --listen=127.0.0.1:0 \
  --metrics_addr=127.0.0.1:0 --port_file="$run/ports" 2>"$run/denoiser.log" &
denoiser=$!
for _ in $(seq 300); do
  [ -s "$run/ports" ] && break
  kill -0 "$denoiser" 2>/dev/null || { cat "$run/denoiser.log" >&2; exit 1; }
  sleep 0.1
done
port=$(sed -n 's/^grpc=//p' "$run/ports")
metrics=$(sed -n 's/^metrics=//p' "$run/ports")
echo "denoiser: 127.0.0.1:$port (metrics: http://127.0.0.1:$metrics/metrics)"

build/bin/dgrid models --target="127.0.0.1:$port"
build/bin/dgrid branch --target="127.0.0.1:$port" --prompt="$prompt" --seed="$seed" -o demo.png
echo "image: $(pwd)/demo.png"
