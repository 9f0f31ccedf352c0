#!/usr/bin/env bash
# Runs the grid benchmark on this machine and records it:
# bench/results/latest.jsonl (one JSON line per variant and grid) and
# bench/results/latest.png (bar chart, bench/plot_bench.py). Run after scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x build/bin/dgrid-bench ] || { scripts/install-deps.sh; cmake --preset default; cmake --build --preset default -j "$(nproc)"; }
mkdir -p bench/results
{
  echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores" >&2
  build/bin/dgrid-bench grid --model_dir=models/fashion-mnist --runs="${RUNS:-5}"
} > bench/results/latest.jsonl
/usr/bin/python3 bench/plot_bench.py bench/results/latest.jsonl bench/results/latest.png
# The text-to-image fixture (tests/fixtures/make_text_fixture.py; ctest writes
# it): the same grid with a text encoder and a VAE decoder in the path.
text_model=build/fixtures/textlatent
[ -f "$text_model/manifest.json" ] || /usr/bin/python3 tests/fixtures/make_text_fixture.py build/fixtures >/dev/null
{
  echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores" >&2
  build/bin/dgrid-bench grid --model_dir="$text_model" --grids=default \
    --variants=limit,limit_all,inprocess,inprocess_whole,pair_1,pair_1_whole,pair_2 --grid_prompt="a photo of a cat" --runs="${RUNS:-5}"
} > bench/results/text.jsonl
# The shipped emoji bundle (text to image, 4x16x16 latents, a VAE decoder):
# its image forward by batch, then the default grid through the pair.
{
  echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores" >&2
  build/bin/dgrid-bench denoiser --model_dir=models/emoji --seconds=3
  build/bin/dgrid-bench grid --model_dir=models/emoji --grids=default \
    --variants=limit,limit_all,inprocess,inprocess_whole,pair_1,pair_1_whole,pair_2 --grid_prompt="grinning face, noto" --runs="${RUNS:-5}"
} > bench/results/emoji.jsonl
echo "results: bench/results/latest.jsonl (text fixture: bench/results/text.jsonl, emoji bundle: bench/results/emoji.jsonl), chart: bench/results/latest.png"
