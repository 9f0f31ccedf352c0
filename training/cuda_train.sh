#!/bin/bash
# Trains the shipped denoiser on a CUDA machine and evaluates it there.
#
#   training/cuda_train.sh prepare   # here: Debian packages + dataset into .gpu-deps/, .gpu-data/
#   training/cuda_train.sh run       # there, from the repo root, with both folders carried
#
# `run` builds dgrid-train and dgrid-eval against the machine's CUDA LibTorch
# (packages and setup: scripts/gpu/), picks the epoch count that fits
# TRAIN_BUDGET_S from a short timed probe, trains from scratch with the same
# flags as the CPU command in training/README.md, evaluates the new bundle and
# packs bundle, checkpoint, loss curve and logs into $OUT/cuda_train.tgz.
# Every stage is bounded by `timeout`, and whatever finished is packed.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = prepare ]; then
  set -e
  scripts/gpu/fetch-debs.sh .gpu-deps
  mkdir -p .gpu-data
  # Keep the dataset copy out of git (.gpu-deps/ is in .gitignore already).
  if [ -d .git ]; then
    mkdir -p .git/info
    grep -qsx '/.gpu-data/' .git/info/exclude || echo '/.gpu-data/' >> .git/info/exclude
  fi
  cp /usr/share/datasets/fashion-mnist/*.gz .gpu-data/
  du -sh .gpu-deps .gpu-data
  exit 0
fi
[ "${1:-}" = run ] || { echo "usage: $0 prepare|run" >&2; exit 2; }

OUT=${OUT:-/tmp/cuda_train_out}
TRAIN_BUDGET_S=${TRAIN_BUDGET_S:-210}
EVAL_BUDGET_S=${EVAL_BUDGET_S:-120}
MAX_EPOCHS=${MAX_EPOCHS:-40}
mkdir -p "$OUT" training/runs
log=$OUT/cuda_train.log
exec > >(tee "$log") 2>&1
t0=$SECONDS
stamp() { echo "[cuda_train +$((SECONDS - t0))s] $*"; }

pack() {
  stamp "packing"
  tar czf "$OUT/cuda_train.tgz" --ignore-failed-read models/fashion-mnist \
    training/runs/diffusion.ckpt training/runs/*.log "$log" 2>/dev/null
  ls -la "$OUT"
}
trap pack EXIT

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# Unpacks the carried packages into /opt/deb, points pkg-config there and sets
# DGRID_CUDA_CMAKE_ARGS (CUDA LibTorch prefix, protoc, pkgconf, ...).
source scripts/gpu/device-setup.sh .gpu-deps || exit 1
# dgrid-train's default data folder is Debian's; put the carried copy there so
# the recorded command is the same as on a Debian machine.
mkdir -p /usr/share/datasets/fashion-mnist
cp .gpu-data/*.gz /usr/share/datasets/fashion-mnist/

B=/tmp/build-cuda
stamp "configure"
cmake -S . -B $B $DGRID_CUDA_CMAKE_ARGS > "$OUT/configure.log" 2>&1 ||
  { tail -40 "$OUT/configure.log"; exit 1; }
stamp "build dgrid-train"
cmake --build $B -j16 --target dgrid-train > "$OUT/build.log" 2>&1 ||
  { grep -m 20 -B2 -A8 'error' "$OUT/build.log"; exit 1; }
# dgrid-eval builds while the model trains (training drives the GPU from one thread).
stamp "build dgrid-eval (background)"
cmake --build $B -j12 --target dgrid-eval > "$OUT/build-eval.log" 2>&1 &
eval_build=$!

flags=(--out_dir models/fashion-mnist --batch 128 --lr 2e-3 --seed 1 --threads 2
       --checkpoint training/runs/diffusion.ckpt)
stamp "probe: 300 steps"
probe_start=$SECONDS
timeout 120 $B/bin/dgrid-train diffusion --out_dir /tmp/probe --batch 128 --lr 2e-3 --seed 1 \
  --threads 2 --epochs 1 --max_steps 300 --checkpoint /tmp/probe/c.ckpt > "$OUT/probe.log" 2>&1 ||
  { tail -20 "$OUT/probe.log"; exit 1; }
probe_s=$((SECONDS - probe_start))
# 468 steps an epoch; the probe's wall time includes its start and export, so this errs short.
epochs=$(( TRAIN_BUDGET_S * 300 / (probe_s * 468 + 1) ))
[ $epochs -gt $MAX_EPOCHS ] && epochs=$MAX_EPOCHS
[ $epochs -lt 10 ] && epochs=10
stamp "probe took ${probe_s}s; training $epochs epochs"
timeout $((TRAIN_BUDGET_S + 60)) $B/bin/dgrid-train diffusion "${flags[@]}" --epochs $epochs \
  2> >(tr '\r' '\n' | grep -v '^$' | awk 'NR % 20 == 1 || /exported|rror|dgrid-train/' \
       > training/runs/diffusion-cuda.log)
rc=$?
stamp "training exit $rc"
tail -5 training/runs/diffusion-cuda.log

wait $eval_build || { grep -m 20 -B2 -A8 'error' "$OUT/build-eval.log"; exit 1; }
stamp "eval"
timeout $EVAL_BUDGET_S $B/bin/dgrid-eval --bundle models/fashion-mnist --json \
  --guidance 0,1,1.5,2,3,4 --max_batch 512 --threads 4 --out_dir /tmp/eval-cuda \
  > "$OUT/eval-cuda.json" 2> training/runs/eval-cuda.log
stamp "eval exit $?"
cp /tmp/eval-cuda/*.png "$OUT/" 2>/dev/null
tail -12 training/runs/eval-cuda.log
