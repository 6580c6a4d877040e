#!/usr/bin/env bash
# Configures and builds normserve in ./build (Release). Usage: scripts/build.sh [cmake args]
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DNORMSERVE_WERROR=ON "$@"
cmake --build build -j "$(nproc)"
