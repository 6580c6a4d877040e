#!/usr/bin/env bash
# Runs one libFuzzer target on its checked-in corpus and reproducers.
#   run_fuzzer.sh regress <binary> <name>                      every seed and reproducer once
#   run_fuzzer.sh run <binary> <name> <seconds> [<workdir>]    fuzz for <seconds>; new inputs go
#                                                              to <workdir>/<name>/corpus, crashes
#                                                              to <workdir>/<name>/artifacts/
# NORMSERVE_FUZZ_SECONDS overrides <seconds>; NORMSERVE_FUZZ_FLAGS adds libFuzzer flags
# (e.g. "-jobs=2 -workers=2").
set -euo pipefail
mode=$1 bin=$2 name=$3
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
corpus=$here/corpus/$name
crashes=$here/crashes/$name
flags=(-timeout=30 -rss_limit_mb=4096)
extra_seeds=()
if [[ $name == onnx_compile ]]; then
  # The onnx target skips inputs above 256 KiB (kMaxInputBytes); the repository's models
  # are seeds too (read-only: libFuzzer writes only into the first corpus directory).
  flags+=(-max_len=262144 -dict="$here/onnx.dict")
  for d in "$root"/models/repository/*/1; do extra_seeds+=("$d"); done
fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
case $mode in
  regress)
    mapfile -t files < <(find "$corpus" "$crashes" "${extra_seeds[@]}" -type f \
                           ! -name '.gitkeep' ! -name '*.md' | sort)
    echo "$name: ${#files[@]} inputs"
    ((${#files[@]})) || exit 0
    exec "$bin" "${flags[@]}" "${files[@]}"
    ;;
  run)
    seconds=${NORMSERVE_FUZZ_SECONDS:-$4} work=${5:-$root/build-asan/fuzz/work}/$name
    mkdir -p "$work/corpus" "$work/artifacts"
    # shellcheck disable=SC2086
    exec "$bin" "${flags[@]}" -max_total_time="$seconds" -print_final_stats=1 \
      -artifact_prefix="$work/artifacts/" ${NORMSERVE_FUZZ_FLAGS:-} \
      "$work/corpus" "$corpus" "$crashes" "${extra_seeds[@]}"
    ;;
  *) echo "usage: $0 regress|run <binary> <name> [seconds] [workdir]" >&2; exit 2 ;;
esac
