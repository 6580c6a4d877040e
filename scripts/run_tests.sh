#!/usr/bin/env bash
# The README's test command (and CI's, via .ci/run): install, then each phase below, timed.
# Exits non-zero if any phase failed; every phase runs regardless, and a table of phase
# wall times ends the output.
#   format  clang-format check (scripts/check_format.sh)
#   gcc     GCC Release build (what ships) + the whole suite            (build/)
#   asan    clang: -Wthread-safety -Werror, ASan+UBSan + the whole suite,
#           including every fuzz seed and crash reproducer once          (build-asan/)
#   tsan    clang TSan build + the concurrency tests (label tsan)        (build-tsan/)
#   fuzz    each libFuzzer target for NORMSERVE_FUZZ_SECONDS (default 60) (build-asan/)
# NORMSERVE_CI_PHASES selects phases (default: "format gcc asan tsan fuzz"); extra
# arguments go to the gcc phase's ctest (e.g. -R service).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
phases=${NORMSERVE_CI_PHASES:-format gcc asan tsan fuzz}
fuzz_seconds=${NORMSERVE_FUZZ_SECONDS:-60}
jobs=$(nproc)
# Long or opt-in labels never run by default: the soak, the fuzz campaigns.
exclude='soak|fuzz_run'

bash scripts/install_deps.sh || exit 1

# Sanitizer runtime options (the suppression files say why each entry is there).
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:suppressions=$root/scripts/sanitizers/ubsan.supp"
export ASAN_OPTIONS="detect_leaks=1:check_initialization_order=1:strict_init_order=1"
export LSAN_OPTIONS="suppressions=$root/scripts/sanitizers/lsan.supp:print_suppressions=0"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$root/scripts/sanitizers/tsan.supp"

declare -a table
failed=0
run_phase() {
  local name=$1
  shift
  local t0=$SECONDS
  echo "=== phase $name: $*"
  if "$@"; then
    table+=("$(printf '%-7s %5d s  ok' "$name" $((SECONDS - t0)))")
  else
    table+=("$(printf '%-7s %5d s  FAILED' "$name" $((SECONDS - t0)))")
    failed=1
  fi
}

phase_format() { bash scripts/check_format.sh; }
phase_gcc() {
  bash scripts/build.sh &&
    (cd build && ctest --output-on-failure --timeout 1200 -j "$jobs" -LE "$exclude" "$@")
}
phase_asan() {
  # The recalibration experiment, the zoo and the int8 accuracy passes run the same engine
  # code as parity_test, int8_serving_test and the integration tests, for minutes under
  # ASan: the GCC phase runs them.
  bash scripts/build_clang.sh asan &&
    (cd build-asan && ctest --output-on-failure --timeout 1800 -j "$jobs" \
      -LE "$exclude|experiment|zoo_quick|int8_accuracy")
}
phase_tsan() {
  # Only the concurrency tests and what they start; the absl::Mutex shim is preloaded
  # (cmake/tsan_absl_mutex.cc). libgomp is not TSan-instrumented: one OpenMP thread.
  bash scripts/build_clang.sh tsan inference_scheduler_test servable_manager_test \
    training_session_test server_integration_test training_integration_test normserve \
    normserve_tsan_absl_mutex &&
    (cd build-tsan &&
      LD_PRELOAD=$root/build-tsan/libnormserve_tsan_absl_mutex.so OMP_NUM_THREADS=1 \
        ctest --output-on-failure --timeout 1800 -j "$jobs" -L tsan)
}
phase_fuzz() {
  (cd build-asan && NORMSERVE_FUZZ_SECONDS=$fuzz_seconds ctest --output-on-failure -j "$jobs" -L fuzz_run)
}

for p in $phases; do
  if [[ $p == gcc ]]; then
    run_phase "$p" "phase_$p" "$@"
  else
    run_phase "$p" "phase_$p"
  fi
done

echo "=== phase wall times ($(nproc) cores)"
printf '%s\n' "${table[@]}"
exit $failed
