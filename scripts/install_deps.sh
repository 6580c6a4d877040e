#!/usr/bin/env bash
# Installs everything normserve needs to build, test, benchmark and serve, from Debian
# bookworm packages only (run as root on a fresh machine; idempotent).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

# Usage: scripts/install_deps.sh [--build-only]
#   --build-only: only what compiling the binaries needs (the Dockerfile's build stage).
BUILD_PACKAGES=(
  # build
  build-essential cmake ninja-build pkg-config git ca-certificates
  # C++ dependencies
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  libdnnl-dev ocl-icd-opencl-dev opencl-headers  # Debian's dnnl CMake config requires OpenCL
  prometheus-cpp-dev libonnx-dev libgtest-dev libgmock-dev libbenchmark-dev
  libpng-dev libjpeg-dev libssl-dev  # normserve-cli: PNG/JPEG input, SHA-256 request ids
)
PACKAGES=(
  "${BUILD_PACKAGES[@]}"
  # the clang phases of scripts/run_tests.sh: -Wthread-safety, ASan/UBSan/TSan, libFuzzer,
  # clang's OpenMP for the clang builds, and the format check
  clang-14 libclang-rt-14-dev libomp-14-dev clang-format-14
  # oracles, peers and test clients
  python3-torch python3-torchvision python3-onnx python3-grpcio python3-numpy
  dataset-fashion-mnist prometheus openssl
  python3-yaml  # tests/deploy read the Prometheus, compose and Kubernetes YAML
)

build_only=0
[[ "${1:-}" == "--build-only" ]] && build_only=1
((build_only)) && PACKAGES=("${BUILD_PACKAGES[@]}")

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node and npm run the ONNX Runtime peer of the benchmark; a machine may already have a
# nodejs that bundles npm (installing Debian's npm next to it conflicts).
((build_only)) || command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)

if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# ONNX Runtime (the npm package onnxruntime-node) in bench/node_modules: the benchmark's
# peer and the int8 tests' oracle (tests/kernels/ort_run.js). --ignore-scripts: its install
# script only fetches GPU providers; the CPU library ships in the package.
if ((!build_only)) && [[ ! -f "$(dirname "$0")/../bench/node_modules/onnxruntime-node/package.json" ]]; then
  (cd "$(dirname "$0")/../bench" && npm install --ignore-scripts --no-audit --no-fund)
fi
