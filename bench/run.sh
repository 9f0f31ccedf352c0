#!/usr/bin/env bash
# Runs the grid benchmark on this machine and records it:
# bench/results/latest.jsonl (one JSON line per variant and grid) and
# bench/results/latest.png (bar chart). Run after scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x build/bin/dgrid-bench ] || { scripts/install-deps.sh; cmake --preset default; cmake --build --preset default -j "$(nproc)"; }
mkdir -p bench/results
{
  echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores" >&2
  build/bin/dgrid-bench grid --model_dir=models/fashion-mnist --runs="${RUNS:-5}"
} > bench/results/latest.jsonl
build/bin/dgrid-bench chart bench/results/latest.jsonl bench/results/latest.png
echo "results: bench/results/latest.jsonl, chart: bench/results/latest.png"
