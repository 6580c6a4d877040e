#!/usr/bin/env bash
# The README's run command: install, build, and serve the embedded default model
# repository (gRPC on :8001, Prometheus metrics on :8002). Extra args go to normserve.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
exec ./build/service/normserve --model_repository=models/repository "$@"
