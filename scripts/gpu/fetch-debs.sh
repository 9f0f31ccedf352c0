#!/usr/bin/env bash
# Run here (a Debian 12 machine with apt), from the repository root:
#
#   scripts/gpu/fetch-debs.sh [DEST]     # DEST defaults to .gpu-deps (git-ignored)
#
# Downloads, without installing them, the Debian 12 packages that a build of
# this project needs on a GPU machine that has CUDA, a compiler, cmake and a
# CUDA LibTorch but none of the project's other libraries: gRPC, protobuf,
# abseil, prometheus-cpp, GoogleTest, libpng, Cairo, cpp-httplib, RE2, ICU,
# nlohmann-json and pkgconf,
# each with the runtime libraries it loads. They land in DEST/debs; carry DEST
# to the GPU machine with the working tree and run the build there after
# `source scripts/gpu/device-setup.sh DEST`, which unpacks them.
set -euo pipefail

dest=${1:-.gpu-deps}

packages=(
  # gRPC and protobuf, with the code generators and the health/reflection protos
  libgrpc++-dev libgrpc++1.51 libgrpc-dev libgrpc29 protobuf-compiler-grpc grpc-proto
  libprotobuf-dev libprotobuf32 libprotoc-dev libprotoc32 protobuf-compiler
  libabsl-dev libabsl20220623 libre2-dev libre2-9 libc-ares-dev libc-ares2
  # prometheus-cpp: the project uses core only, but the package's CMake config
  # also looks for pull (civetweb) and push (curl)
  prometheus-cpp-dev libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0
  libprometheus-cpp-push1.0 libcivetweb-dev libcivetweb1 libcurl4-openssl-dev libcurl4
  # TLS, compression, PNG, tests
  libssl-dev libssl3 zlib1g-dev libpng-dev libpng16-16
  libgtest-dev libgmock-dev googletest
  # Cairo (grid figure, loss and speciation plots) and what libcairo2 loads
  libcairo2-dev libcairo2 libpixman-1-0 libfontconfig1 fontconfig-config libfreetype6
  libx11-6 libxcb1 libxcb-render0 libxcb-shm0 libxext6 libxrender1 libxau6
  libxdmcp6 libbsd0 libmd0 libexpat1 libbrotli-dev libbrotli1
  # cpp-httplib (HTTP gateway, metrics endpoint) and pkg-config, which finds
  # Cairo, cpp-httplib and RE2
  libcpp-httplib-dev libcpp-httplib0.11 pkgconf pkgconf-bin libpkgconf3
  # the prompt tokenizers' ICU (find_package(ICU)) and the JSON library
  # (find_package(nlohmann_json), header-only)
  libicu-dev libicu72 nlohmann-json3-dev
)

mkdir -p "$dest/debs"
cd "$dest/debs"
# Skip what an earlier run already fetched, so a rerun only adds new packages.
wanted=()
for p in $(printf '%s\n' "${packages[@]}" | sort -u); do
  compgen -G "${p}_*.deb" > /dev/null || wanted+=("$p")
done
if [ ${#wanted[@]} -gt 0 ]; then
  # As root, apt warns on every package that the download is unsandboxed.
  set +o pipefail
  apt-get download "${wanted[@]}" 2>&1 | grep -v 'unsandboxed' || true
  set -o pipefail
fi
missing=()
for p in "${packages[@]}"; do
  compgen -G "${p}_*.deb" > /dev/null || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "fetch-debs: could not download: ${missing[*]}" >&2
  exit 1
fi
cd - > /dev/null
echo "fetch-debs: $(ls "$dest/debs" | wc -l) packages, $(du -sh "$dest" | cut -f1), in $dest/debs"
