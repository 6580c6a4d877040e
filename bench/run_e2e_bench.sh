#!/usr/bin/env bash
# End-to-end benchmark: starts a real `normserve` on loopback serving the models, runs
# bench/normserve_loadgen against it (closed loop, N clients, fixed duration) next to the
# engine in-process on the same ONNX files in the same run, and prints the table with the
# targets of issue 3 (1 client within 5% of in-process latency; 8 clients >= 95% of the
# in-process throughput). Raw JSON lines: <build>/e2e_results.jsonl.
#
# Usage: bench/run_e2e_bench.sh [--build-dir build] [--models resnet50,tiny_bn]
#                               [--seconds 5] [--warmup 1] [--rounds 2] [--clients 1,8]
#                               [--channels per_client,shared] [--api normserve|kserve]
#                               [--workers 1] [--intra-op-threads 0] [--no-build]
set -uo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH_DIR")"
PYTHON=/usr/bin/python3  # Debian's python with torch 1.13 (model export)

build_dir=build
models=resnet50,tiny_bn
seconds=5
warmup=1
rounds=2
clients=1,8
channels=per_client,shared
api=normserve
workers=1
intra_op_threads=0
do_build=1

usage() { sed -n '8,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build-dir) build_dir="$2"; shift 2 ;;
    --models) models="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --clients) clients="$2"; shift 2 ;;
    --channels) channels="$2"; shift 2 ;;
    --api) api="$2"; shift 2 ;;
    --workers) workers="$2"; shift 2 ;;
    --intra-op-threads) intra_op_threads="$2"; shift 2 ;;
    --no-build) do_build=0; shift ;;
    -h|--help) usage ;;
    *) echo "run_e2e_bench.sh: unknown argument '$1'" >&2; usage ;;
  esac
done

build_dir="$(mkdir -p "$build_dir" && cd "$build_dir" && pwd)" || exit 1
cd "$ROOT" || exit 1
IFS=, read -r -a model_list <<< "$models"
log() { echo "run_e2e_bench: $*" >&2; }

results="$build_dir/e2e_results.jsonl"
models_dir="$build_dir/bench_models"
normserve="$build_dir/service/normserve"
loadgen="$build_dir/bench/normserve_loadgen"
: > "$results"

# 1. Binaries.
if [[ $do_build == 1 ]]; then
  if [[ ! -f "$build_dir/CMakeCache.txt" ]]; then
    cmake -S "$ROOT" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release || exit 1
  fi
  cmake --build "$build_dir" --target normserve normserve_loadgen || exit 1
fi

# 2. ONNX files: the embedded repository's models as they are, the others exported like
# bench/run_bench.sh does (the same files, so the two benchmarks compare).
onnx_of() {
  if [[ -f "$ROOT/models/repository/$1/1/model.onnx" ]]; then
    echo "$ROOT/models/repository/$1/1/model.onnx"
  else
    echo "$models_dir/$1/model.onnx"
  fi
}
missing=()
for m in "${model_list[@]}"; do
  [[ -f "$(onnx_of "$m")" ]] || missing+=("$m")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  only="$(IFS=,; echo "${missing[*]}")"
  log "exporting $only to $models_dir"
  "$PYTHON" "$ROOT/scripts/export_test_models.py" --out "$models_dir" --only "$only" || exit 1
fi

# 3. A repository with exactly these models, and the server on a free loopback port.
work="$(mktemp -d "${TMPDIR:-/tmp}/normserve_e2e.XXXXXX")" || exit 1
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid"
    wait "$server_pid" 2>/dev/null
  fi
  rm -rf "$work"
}
trap cleanup EXIT
for m in "${model_list[@]}"; do
  mkdir -p "$work/repo/$m/1"
  ln "$(onnx_of "$m")" "$work/repo/$m/1/model.onnx" 2>/dev/null ||
    cp "$(onnx_of "$m")" "$work/repo/$m/1/model.onnx" || exit 1
done
"$normserve" --host=127.0.0.1 --port=0 --metrics_port=-1 --model_repository="$work/repo" \
  --workers="$workers" --intra_op_threads="$intra_op_threads" 2> "$work/server.log" &
server_pid=$!
port=""
for _ in $(seq 1 600); do
  port="$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$work/server.log" | head -n 1)"
  [[ -n "$port" ]] && break
  if ! kill -0 "$server_pid" 2>/dev/null; then break; fi
  sleep 0.2
done
if [[ -z "$port" ]]; then
  log "normserve did not start:"
  cat "$work/server.log" >&2
  exit 1
fi
log "$(grep -m1 'listening on' "$work/server.log" | sed 's/.*normserve: //')"

# 4. Each model: in-process and end-to-end, interleaved inside normserve_loadgen.
loadavg_before="$(cut -d' ' -f1-3 /proc/loadavg)"
failures=0
for m in "${model_list[@]}"; do
  log "measuring $m ($rounds round(s) x configurations of ${seconds}s + ${warmup}s warm-up)"
  "$loadgen" --address="127.0.0.1:$port" --model="$(onnx_of "$m")" --name="$m" --api="$api" \
    --clients="$clients" --channels="$channels" --seconds="$seconds" \
    --warmup_seconds="$warmup" --rounds="$rounds" --workers="$workers" \
    --intra_op_threads="$intra_op_threads" >> "$results" || {
    log "FAILED: $m"
    failures=$((failures + 1))
  }
done
if ! kill -0 "$server_pid" 2>/dev/null; then
  log "normserve died during the run:"
  cat "$work/server.log" >&2
  failures=$((failures + 1))
fi
cpu_model="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
printf '{"runner":"meta","cpu_model":"%s","nproc":%s,"loadavg_before":"%s","loadavg_after":"%s","seconds":%s,"rounds":%s}\n' \
  "$cpu_model" "$(nproc)" "$loadavg_before" "$(cut -d' ' -f1-3 /proc/loadavg)" "$seconds" \
  "$rounds" >> "$results"

echo
"$PYTHON" "$BENCH_DIR/format_e2e_table.py" "$results" || failures=$((failures + 1))
echo "raw results: $results"
[[ $failures -eq 0 ]] || { log "$failures failure(s)"; exit 1; }
