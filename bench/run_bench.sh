#!/usr/bin/env bash
# normserve vs ONNX Runtime vs PyTorch TorchScript: batch-1 latency on the same ONNX files,
# same threads and CPUs, runners interleaved per model and repeated in rounds; prints the
# table (bench/README.md) and keeps the raw JSON lines in <build>/bench_results.jsonl.
#
# Usage: bench/run_bench.sh [--build-dir build] [--models resnet18,resnet50,mobilenet_v2,gn_resnet]
#                           [--seconds 5] [--rounds 3] [--threads 2] [--cpus 0,1]
#                           [--runners normserve,onnxruntime,pytorch] [--no-build]
#                           [--precisions fp32,bf16,int8]
# bf16 rows: normserve's bf16 plan of the same file. int8 rows: the model quantized by
# tools/normserve-quantize (its reference inputs as calibration samples), run by normserve
# (oneDNN int8) and by ONNX Runtime (its QDQ path) on the same file. The default
# precisions are fp32 plus those the CPU has instructions for (avx512_bf16, avx512_vnni).
set -uo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH_DIR")"
PYTHON=/usr/bin/python3  # Debian's python with torch 1.13 / torchvision / onnx

build_dir=build
models=resnet18,resnet50,mobilenet_v2,gn_resnet
seconds=5
rounds=3
threads=2
cpus=""
runners=normserve,onnxruntime,pytorch
do_build=1
precisions=fp32
grep -qw avx512_bf16 /proc/cpuinfo && precisions+=,bf16
grep -qw avx512_vnni /proc/cpuinfo && precisions+=,int8

usage() { sed -n '5,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build-dir) build_dir="$2"; shift 2 ;;
    --models) models="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --cpus) cpus="$2"; shift 2 ;;
    --runners) runners="$2"; shift 2 ;;
    --no-build) do_build=0; shift ;;
    --precisions) precisions="$2"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "run_bench.sh: unknown argument '$1'" >&2; usage ;;
  esac
done

[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "run_bench.sh: --rounds must be a positive integer" >&2; exit 2; }
# Paths are relative to the caller's directory; everything below runs from the repo root.
build_dir="$(mkdir -p "$build_dir" && cd "$build_dir" && pwd)" || exit 1
cd "$ROOT" || exit 1
# The same CPUs for every runner: the first $threads CPUs unless told otherwise.
[[ -n "$cpus" ]] || cpus="$(seq -s, 0 $((threads - 1)))"
IFS=, read -r -a model_list <<< "$models"
has_runner() { [[ ",$runners," == *",$1,"* ]]; }
has_precision() { [[ ",$precisions," == *",$1,"* ]]; }
log() { echo "run_bench: $*" >&2; }

results="$build_dir/bench_results.jsonl"
models_dir="$build_dir/bench_models"
engine_bench="$build_dir/bench/normserve_engine_bench"
: > "$results"
failures=0

# 1. Peers and tools.
if has_runner onnxruntime && [[ ! -f "$BENCH_DIR/node_modules/onnxruntime-node/package.json" ]]; then
  log "installing onnxruntime-node"
  # --ignore-scripts: the install script only fetches the CUDA/TensorRT providers from
  # NuGet; the CPU library (bin/napi-v6/linux/x64/libonnxruntime.so.1) ships in the package.
  (cd "$BENCH_DIR" && npm install --ignore-scripts --no-audit --no-fund) || exit 1
fi
if has_runner normserve && [[ $do_build == 1 ]]; then
  if [[ ! -f "$build_dir/CMakeCache.txt" ]]; then
    cmake -S "$ROOT" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release || exit 1
  fi
  cmake --build "$build_dir" --target normserve_engine_bench normserve-quantize || exit 1
fi

# 2. The ONNX files every runner reads.
missing=()
for m in "${model_list[@]}"; do
  [[ -f "$models_dir/$m/model.onnx" ]] || missing+=("$m")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  only="$(IFS=,; echo "${missing[*]}")"
  log "exporting $only to $models_dir"
  "$PYTHON" "$ROOT/scripts/export_test_models.py" --out "$models_dir" --only "$only" || exit 1
fi
# The int8 file both int8 runners read, calibrated on the model's reference inputs.
if has_precision int8; then
  for m in "${model_list[@]}"; do
    d="$models_dir/$m"
    if [[ ! -f "$d/model_int8.onnx" || "$d/model.onnx" -nt "$d/model_int8.onnx" ]]; then
      log "quantizing $m to $d/model_int8.onnx"
      "$build_dir/tools/normserve-quantize" --model="$d/model.onnx" \
        --samples="$d/input_b1.npy,$d/input_b3.npy" --out="$d/model_int8.onnx" >&2 || exit 1
    fi
  done
fi

# Runs one runner pinned to $cpus; appends its JSON line (tagged with $round) to $results.
round=0
precision=fp32
run() {
  local label="$1"; shift
  local out rc line
  out="$(OMP_NUM_THREADS="$threads" taskset -c "$cpus" "$@")"
  rc=$?
  line="$(grep '^{' <<< "$out" | tail -n 1)"
  if [[ $rc -ne 0 || -z "$line" ]]; then
    log "FAILED ($rc): $label"
    failures=$((failures + 1))
    return 1
  fi
  line="${line%\}},\"round\":$round}"
  # The runner's own precision field if it writes one (normserve_engine_bench does).
  [[ $line == *'"precision"'* ]] || line="${line%\}},\"precision\":\"$precision\"}"
  echo "$line" >> "$results"
  log "$line"
}

loadavg_before="$(cut -d' ' -f1-3 /proc/loadavg)"

# 3. The yardstick (before and after the models; the table uses the higher, so a burst of
# outside load during one measurement does not inflate "% peak"), and between them each
# model with the three runners back to back, so load from other processes falls on all
# three alike; all of it $rounds times, so the table can take each ratio per round (the
# machine's speed drifts by 10-15% over minutes on a shared host) and its median.
if has_runner normserve; then
  run "conv_peak" "$engine_bench" --conv_peak --threads="$threads"
fi
for round in $(seq 1 "$rounds"); do
for m in "${model_list[@]}"; do
  onnx="$models_dir/$m/model.onnx"
  if has_runner normserve; then
    run "normserve $m" "$engine_bench" --model="$onnx" --name="$m" \
      --threads="$threads" --seconds="$seconds"
  fi
  if has_runner onnxruntime; then
    run "onnxruntime $m" node "$BENCH_DIR/ort_bench.js" --model "$onnx" --name "$m" \
      --threads "$threads" --seconds "$seconds"
  fi
  if has_runner pytorch; then
    # --require_export_script: PyTorch must run the module the ONNX file was exported from.
    run "pytorch $m" "$PYTHON" "$BENCH_DIR/torch_bench.py" --name "$m" --onnx "$onnx" \
      --threads "$threads" --seconds "$seconds" --require_export_script
  fi
  if has_runner normserve && has_precision bf16; then
    precision=bf16
    run "normserve bf16 $m" "$engine_bench" --model="$onnx" --name="$m" --precision=bf16 \
      --threads="$threads" --seconds="$seconds"
  fi
  if has_precision int8; then
    precision=int8
    if has_runner normserve; then
      run "normserve int8 $m" "$engine_bench" --model="$models_dir/$m/model_int8.onnx" \
        --name="$m" --precision=int8 --threads="$threads" --seconds="$seconds"
    fi
    if has_runner onnxruntime; then
      run "onnxruntime int8 $m" node "$BENCH_DIR/ort_bench.js" \
        --model "$models_dir/$m/model_int8.onnx" --name "$m" --threads "$threads" \
        --seconds "$seconds"
    fi
  fi
  precision=fp32
done
done

if has_runner normserve; then
  run "conv_peak" "$engine_bench" --conv_peak --threads="$threads"
fi

# 4. The table.
cpu_model="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
"$PYTHON" - "$results" "$models" "$threads" "$cpus" "$seconds" "$cpu_model" \
  "$loadavg_before" "$(cut -d' ' -f1-3 /proc/loadavg)" "$rounds" <<'EOF'
import json, sys
path, models, threads, cpus, seconds, cpu, before, after, rounds = sys.argv[1:]
meta = {"runner": "meta", "models": models.split(","), "threads": int(threads), "cpus": cpus,
        "seconds": float(seconds), "rounds": int(rounds), "cpu_model": cpu, "loadavg_before": before,
        "loadavg_after": after, "nproc": __import__("os").cpu_count()}
with open(path, "a") as f:
    f.write(json.dumps(meta) + "\n")
EOF
echo
"$PYTHON" "$BENCH_DIR/format_table.py" "$results" || failures=$((failures + 1))
echo "raw results: $results"
if [[ $failures -gt 0 ]]; then
  log "$failures runner(s) failed"
  exit 1
fi
