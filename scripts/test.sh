#!/usr/bin/env bash
# The test command: installs dependencies, configures, builds and runs the
# whole ctest suite. CI (.ci/run) calls exactly this.
#
#   scripts/test.sh            Release build in build/, every test
#   scripts/test.sh --asan     ASan+UBSan build in build-asan/, unit tests
#   scripts/test.sh --tsan     TSan build in build-tsan/, batcher and pool tests
set -euo pipefail
cd "$(dirname "$0")/.."

preset=default
ctest_args=()
case "${1:-}" in
  "") ;;
  --asan) preset=asan; ctest_args=(-L unit) ;;
  --tsan) preset=tsan; ctest_args=(-R 'Batcher|Pool') ;;
  *) echo "usage: scripts/test.sh [--asan|--tsan]" >&2; exit 2 ;;
esac

scripts/install-deps.sh
jobs=$(nproc)
cmake --preset "$preset"
cmake --build --preset "$preset" -j "$jobs"
build_dir=build
[ "$preset" = default ] || build_dir="build-$preset"
ctest --test-dir "$build_dir" --output-on-failure --timeout 600 -j "$jobs" "${ctest_args[@]}"
