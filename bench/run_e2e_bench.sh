#!/usr/bin/env bash
# End-to-end benchmark: starts a real `normserve` on loopback serving the models, runs
# bench/normserve_loadgen against it (closed loop, N clients, fixed duration) next to the
# engine in-process on the same ONNX files in the same run, and prints the table with the
# targets of issue 3 (1 client within 5% of in-process latency; 8 clients >= 95% of the
# in-process throughput). Raw JSON lines: <build>/e2e_results.jsonl.
#
# With --policies (issue 12) it instead starts one server per scheduling policy in turn
# (latency, throughput, auto, with "fixed" every streams x threads shape that fills the
# cores, or --fixed's list, and with "batching" auto plus dynamic batching of
# --batching MAX_BATCH:DELAY_US in every model's config.json) and measures every model
# at every client count on each: throughput and p50/p99, with ratios to the best fixed
# shape and to `latency`.
#
# Usage: bench/run_e2e_bench.sh [--build-dir build] [--models resnet50,tiny_bn]
#                               [--seconds 5] [--warmup 1] [--rounds 2] [--clients 1,8]
#                               [--channels per_client,shared] [--api normserve|kserve]
#                               [--workers 1] [--intra-op-threads 0] [--no-build]
#                               [--policies latency,throughput,auto,fixed,batching]
#                               [--fixed 1x2,2x1] [--batching 8:500] [--training]
# --training (with --policies): the servers also run the training endpoint, and every
# configuration is measured again as Accumulate requests into a fresh session (issue 12
# item 4: Accumulate at >= 0.8x serving's throughput at 8 clients).
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
policies=""
fixed=""
batching=8:500
training=0

usage() { sed -n '15,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }
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
    --policies) policies="$2"; shift 2 ;;
    --fixed) fixed="$2"; shift 2 ;;
    --batching) batching="$2"; shift 2 ;;
    --no-build) do_build=0; shift ;;
    --training) training=1; shift ;;
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
(umask 077 && od -An -tx8 -N16 /dev/urandom | tr -d ' \n' > "$work/token")
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
# start_server FLAG...: a server on a free port with these scheduling flags; sets $port.
start_server() {
  local train_flags=()
  if [[ $training == 1 ]]; then
    rm -rf "$work/state"
    train_flags=(--training_port=0 --training_token_file="$work/token"
                 --training_state_dir="$work/state" --training_max_samples=1000000)
  fi
  "$normserve" --host=127.0.0.1 --port=0 --metrics_port=-1 --model_repository="$work/repo" \
    "${train_flags[@]}" "$@" 2> "$work/server.log" &
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
  training_port="$(sed -n 's/.*training endpoint on 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$work/server.log" | head -n 1)"
}
stop_server() {
  if ! kill -0 "$server_pid" 2>/dev/null; then
    log "normserve died during the run:"
    cat "$work/server.log" >&2
    failures=$((failures + 1))
    return
  fi
  kill -TERM "$server_pid"
  wait "$server_pid" 2>/dev/null
  server_pid=""
}
failures=0
loadavg_before="$(cut -d' ' -f1-3 /proc/loadavg)"
write_meta() {
  cpu_model="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  printf '{"runner":"meta","cpu_model":"%s","nproc":%s,"loadavg_before":"%s","loadavg_after":"%s","seconds":%s,"rounds":%s}\n' \
    "$cpu_model" "$(nproc)" "$loadavg_before" "$(cut -d' ' -f1-3 /proc/loadavg)" "$seconds" \
    "$rounds" >> "$results"
}

# The table from every JSON line of the run; exits 1 if anything failed.
finish() {
  write_meta
  echo
  "$PYTHON" "$BENCH_DIR/format_e2e_table.py" "$results" || failures=$((failures + 1))
  echo "raw results: $results"
  [[ $failures -eq 0 ]] || { log "$failures failure(s)"; exit 1; }
  exit 0
}

# 4a. The policy sweep: one server per policy, every model and client count on each. Rounds
# go round the policies, so background load falls on all of them alike.
if [[ -n "$policies" ]]; then
  cores="$(nproc)"
  if [[ -z "$fixed" ]]; then
    for ((s = 1; s <= cores; s *= 2)); do
      (( cores % s == 0 )) && fixed="${fixed:+$fixed,}${s}x$((cores / s))"
    done
  fi
  configs=()
  IFS=, read -r -a policy_list <<< "$policies"
  for p in "${policy_list[@]}"; do
    case "$p" in
      latency|throughput|auto|batching) configs+=("$p") ;;
      fixed) IFS=, read -r -a shapes <<< "$fixed"; configs+=("${shapes[@]/#/fixed }") ;;
      *) echo "run_e2e_bench.sh: unknown policy '$p'" >&2; exit 2 ;;
    esac
  done
  for ((round = 1; round <= rounds; round++)); do
    for config in "${configs[@]}"; do
      if [[ "$config" == fixed* ]]; then
        shape="${config#fixed }"
        start_server --workers="${shape%x*}" --intra_op_threads="${shape#*x}"
        label="fixed ${shape}"
      elif [[ "$config" == batching ]]; then
        for m in "${model_list[@]}"; do
          printf '{"dynamic_batching": {"max_batch_size": %s, "max_queue_delay_microseconds": %s}}\n' \
            "${batching%:*}" "${batching#*:}" > "$work/repo/$m/config.json"
        done
        start_server --performance_hint=auto
        label="batching ${batching%:*}/${batching#*:}us"
      else
        start_server --performance_hint="$config"
        label="$config"
      fi
      for m in "${model_list[@]}"; do
        log "round $round/$rounds, $label: $m, clients $clients, ${seconds}s + ${warmup}s warm-up each"
        train_args=()
        if [[ $training == 1 ]]; then
          train_args=(--api="$api,training" --training_address="127.0.0.1:$training_port"
                      --training_token_file="$work/token")
        fi
        "$loadgen" --address="127.0.0.1:$port" --model="$(onnx_of "$m")" --name="$m" \
          --api="$api" "${train_args[@]}" --clients="$clients" --channels=per_client \
          --seconds="$seconds" --warmup_seconds="$warmup" --rounds=1 --inprocess=false \
          --policy="$label" \
          >> "$results" || { log "FAILED: $m under $label"; failures=$((failures + 1)); }
      done
      stop_server
      rm -f "$work"/repo/*/config.json
    done
  done
  finish
fi

# 4b. One server with --workers / --intra-op-threads, in-process references beside it.
start_server --workers="$workers" --intra_op_threads="$intra_op_threads"

# Each model: in-process and end-to-end, interleaved inside normserve_loadgen.
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
stop_server
finish
