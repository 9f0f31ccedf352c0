#!/usr/bin/env bash
# The test command: installs dependencies, configures, builds and runs the
# whole ctest suite. CI (.ci/run) calls exactly this.
#
#   scripts/test.sh            Release build in build/, every test
#   scripts/test.sh --asan     ASan+UBSan build in build-asan/, unit tests
#                              (suppressions: tests/lsan.supp, for fontconfig's
#                              process-long caches)
#   scripts/test.sh --tsan     TSan build in build-tsan/: batcher, pool, executor,
#                              CurveService, stall watchdog, metrics endpoint,
#                              GridService (outbox) and prefix-cache tests
#                              (suppressions: tests/tsan.supp, for Debian's
#                              uninstrumented gRPC, abseil and LibTorch)
set -euo pipefail
cd "$(dirname "$0")/.."

preset=default
ctest_args=()
case "${1:-}" in
  "") ;;
  --asan)
    preset=asan
    ctest_args=(-L unit)
    export LSAN_OPTIONS="suppressions=$(pwd)/tests/lsan.supp ${LSAN_OPTIONS:-}"
    ;;
  --tsan)
    preset=tsan
    # The 4,096-sample closed-form test runs 4M trajectory steps: minutes
    # under TSan, and it exercises no threading the other batcher tests miss.
    ctest_args=(-R 'Batcher|Pool|GridExecutor|GridService|CurveService|PrefixCache|StallWatchdog|MetricsEndpoint' -E ClosedForm)
    export TSAN_OPTIONS="suppressions=$(pwd)/tests/tsan.supp ${TSAN_OPTIONS:-}"
    ;;
  *) echo "usage: scripts/test.sh [--asan|--tsan]" >&2; exit 2 ;;
esac

scripts/install-deps.sh
jobs=$(nproc)
cmake --preset "$preset"
cmake --build --preset "$preset" -j "$jobs"
build_dir=build
[ "$preset" = default ] || build_dir="build-$preset"
ctest --test-dir "$build_dir" --output-on-failure --timeout 600 -j "$jobs" "${ctest_args[@]}" \
  | tee "$build_dir/ctest.log"
# gtest reports every test of a suite whose SetUpTestSuite failed (a stack
# that never started) as SKIPPED, and ctest lists those as skipped and
# passes. Under ctest no test skips but the Kubernetes checks (deploy_k8s_*,
# exit 77 without kubectl, which Debian 12 does not package), so any other
# test that did not run fails the run: a fixture that failed to start, or a
# deploy check's tool that install-deps.sh should have installed.
if grep -E '\*\*\*(Skipped|Not Run)' "$build_dir/ctest.log" | grep -vE 'Test +#[0-9]+: deploy_k8s_'; then
  echo "test.sh: the tests above did not run (a fixture that failed to start?)" >&2
  exit 1
fi

# Fuzzing (default mode only): each libFuzzer target runs for a bounded time
# over its committed corpus, the targets side by side; new inputs go to a
# scratch folder, and a crash fails the run.
if [ "$preset" = default ]; then
  fuzz_seconds=${DGRID_FUZZ_SECONDS:-12}
  cmake --preset fuzz >/dev/null
  cmake --build --preset fuzz -j "$jobs"
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  targets=(tensor_decode grid_plan manifest_parse json_request tokenize request_head)
  # fuzz_tokenize's CLIP vocabulary: ctest's derive_clip_vocab wrote it.
  export DGRID_CLIP_DIR="$PWD/$build_dir/fixtures/clip"
  pids=()
  for target in "${targets[@]}"; do
    mkdir -p "$scratch/$target"
    build-fuzz/bin/fuzz_$target -max_total_time="$fuzz_seconds" -print_final_stats=1 \
      -artifact_prefix="$scratch/$target-" "$scratch/$target" "fuzz/corpus/$target" \
      >"$scratch/$target.log" 2>&1 &
    pids+=($!)
  done
  # A target that ends non-zero failed (a crash, an out-of-memory input, or
  # one that could not start), artifact or not.
  failed=()
  for i in "${!targets[@]}"; do
    wait "${pids[$i]}" || failed+=("fuzz_${targets[$i]}")
  done
  for target in "${targets[@]}"; do
    echo "fuzz_$target: ${fuzz_seconds}s over fuzz/corpus/$target"
    grep -E '^(Done|stat::number_of_executed_units)|^==[0-9]+==|SUMMARY' "$scratch/$target.log" || true
  done
  if [ ${#failed[@]} -gt 0 ]; then
    for target in "${failed[@]}"; do
      echo "$target failed; the end of its log:" >&2
      tail -n 20 "$scratch/${target#fuzz_}.log" >&2
    done
    ls "$scratch"/*-crash-* "$scratch"/*-leak-* "$scratch"/*-timeout-* "$scratch"/*-oom-* \
      2>/dev/null >&2 || true
    exit 1
  fi
fi
