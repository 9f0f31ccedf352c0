#!/usr/bin/env bash
# Installs every Debian 12 package that the build, tests, benchmarks and demo
# need. Idempotent: runs `apt-get update` only when something is missing.
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake ninja-build ccache pkg-config git clang libclang-rt-14-dev
  # RPC and common libraries
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev grpc-proto
  prometheus-cpp-dev
  libgtest-dev libgmock-dev
  zlib1g-dev libpng-dev libcairo2-dev fonts-dejavu-core libcpp-httplib-dev libssl-dev
  # model runtime: Debian's LibTorch (CPU) and a fast BLAS for it
  libtorch-dev libopenblas0-pthread
  # Python side: reference vectors, external-model fixture, Python client
  python3-torch python3-grpcio python3-grpc-tools python3-numpy
  # training data
  dataset-fashion-mnist
  # tools the tests use
  openssl curl procps prometheus python3-yaml
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
