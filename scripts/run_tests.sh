#!/usr/bin/env bash
# The README's test command: install, build, run every test (unit, PyTorch parity,
# integration against the real binary, Prometheus). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
cd build
ctest --output-on-failure --timeout 1200 -j 2 "$@"
