#!/usr/bin/env bash
# Configures and builds a clang 14 checking build (issue 9). Every clang build compiles
# with -Wthread-safety -Werror (cmake/Sanitizers.cmake).
#   scripts/build_clang.sh asan [targets...]   build-asan: ASan+UBSan, libFuzzer targets
#   scripts/build_clang.sh tsan [targets...]   build-tsan: TSan
# Without targets the whole tree is built.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=$1
shift
case $mode in
  asan) dir=build-asan args=(-DNORMSERVE_SANITIZE=address,undefined -DNORMSERVE_FUZZ=ON) ;;
  tsan) dir=build-tsan args=(-DNORMSERVE_SANITIZE=thread) ;;
  *) echo "usage: $0 asan|tsan [targets...]" >&2; exit 2 ;;
esac
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
# -O1: sanitizer builds compile faster and still run the suite in minutes; -g for stacks.
CC=clang-14 CXX=clang++-14 cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" -DNORMSERVE_WERROR=ON "${launcher[@]}" "${args[@]}"
cmake --build "$dir" -j "$(nproc)" ${1:+--target "$@"}
