#!/usr/bin/env bash
# Installs every Debian 12 package that the build, tests, benchmarks and demo
# need. Idempotent: runs `apt-get update` only when something is missing.
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake ninja-build ccache pkg-config git clang libclang-rt-14-dev
  # clang's OpenMP (the fuzz preset builds with clang; find_package(OpenMP))
  libomp-14-dev
  # RPC and common libraries
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev grpc-proto
  # prompt tokenizers: ICU (case mapping, NFC) and RE2 (\p{L} classes)
  libicu-dev libre2-dev
  prometheus-cpp-dev
  libgtest-dev libgmock-dev
  zlib1g-dev libpng-dev libcairo2-dev fonts-dejavu-core libcpp-httplib-dev libssl-dev
  nlohmann-json3-dev
  # model runtime: Debian's LibTorch (CPU) and a fast BLAS for it
  libtorch-dev libopenblas0-pthread
  # Python side: reference vectors, external-model fixture, Python client
  python3-torch python3-grpcio python3-grpc-tools python3-numpy
  # the Python client installs with pip into a virtual environment (a test)
  python3-venv python3-pip python3-setuptools
  # the evaluation reads grid PNGs; offline plots (evaluation, benchmarks)
  python3-pil python3-matplotlib
  # tests/fixtures/clip/reference_tokenizer.py (\p{L} in Python)
  python3-regex
  # training data
  dataset-fashion-mnist
  # tools the tests use
  openssl curl procps prometheus python3-yaml
  # browser tests: Debian's Chromium, driven by npm's playwright-core
  chromium
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# Node.js and npm drive the browser tests. This machine kind ships Node 20;
# elsewhere take Debian's, which is 18: the browser tests need 20
# (playwright-core 1.65, node --test --test-concurrency), so with it CMake
# leaves them out and says so.
command -v node >/dev/null && command -v npm >/dev/null || missing+=(nodejs npm)

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
else
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# playwright-core, pinned by tests/web/package-lock.json (it drives Debian's
# Chromium; it never downloads a browser). The image build runs this script
# before the rest of the tree is copied in: then there is nothing to install.
here=$(cd "$(dirname "$0")/.." && pwd)
if [ -f "$here/tests/web/package.json" ] &&
   [ ! -f "$here/tests/web/node_modules/playwright-core/package.json" ]; then
  (cd "$here/tests/web" && npm ci --no-audit --no-fund)
fi

# kubernetes-models, pinned by deploy/tests/schema/package-lock.json: the
# Kubernetes OpenAPI and Prometheus Operator schemas for deploy_k8s_schema.
if [ -f "$here/deploy/tests/schema/package.json" ] &&
   [ ! -f "$here/deploy/tests/schema/node_modules/kubernetes-models/package.json" ]; then
  (cd "$here/deploy/tests/schema" && npm ci --no-audit --no-fund)
fi
# kubectl (its built-in kustomize renders deploy/k8s) is not packaged for
# Debian 12; this machine kind ships it. Without it the deploy_k8s_* tests skip.
command -v kubectl >/dev/null || echo "install-deps: kubectl not found: the deploy_k8s_* tests will be skipped" >&2
