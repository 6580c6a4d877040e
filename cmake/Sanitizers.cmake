# Clang-only checks: thread-safety analysis, sanitizers and libFuzzer (issue 9).
# GCC builds what ships; a clang build checks the ABSL_GUARDED_BY annotations and runs the
# suite under ASan+UBSan or TSan. scripts/run_tests.sh configures one build per mode.

set(NORMSERVE_SANITIZE "" CACHE STRING
    "Comma-separated -fsanitize= list (e.g. address,undefined or thread); clang only")
option(NORMSERVE_FUZZ "Build the libFuzzer targets in fuzz/ (clang only)" OFF)

if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  # Every clang build checks the annotations; with NORMSERVE_WERROR a finding fails the build.
  add_compile_options(-Wthread-safety)
  # Debian's gtest/absl headers and our own code trip a few clang-only style warnings that
  # GCC does not have; they are not defects, and -Werror must stay about thread safety.
  add_compile_options(-Wno-unused-private-field -Wno-unused-lambda-capture
                      -Wno-deprecated-declarations)
elseif(NORMSERVE_SANITIZE OR NORMSERVE_FUZZ)
  message(FATAL_ERROR "NORMSERVE_SANITIZE and NORMSERVE_FUZZ need clang (CMAKE_CXX_COMPILER=clang++-14)")
endif()

if(NORMSERVE_SANITIZE)
  # -fno-sanitize-recover=all: a UBSan finding aborts the process, so the test fails.
  add_compile_options(-fsanitize=${NORMSERVE_SANITIZE} -fno-sanitize-recover=all
                      -fno-omit-frame-pointer -g)
  add_link_options(-fsanitize=${NORMSERVE_SANITIZE})
endif()

if(NORMSERVE_FUZZ)
  # Libraries get coverage instrumentation; only fuzz/ executables link libFuzzer's main.
  add_compile_options(-fsanitize=fuzzer-no-link)
endif()

if(NORMSERVE_SANITIZE MATCHES "thread")
  # Debian's Abseil is not TSan-instrumented: this LD_PRELOAD shim annotates absl::Mutex for
  # TSan (see the file). scripts/run_tests.sh preloads it for the tsan-labelled tests.
  add_library(normserve_tsan_absl_mutex SHARED ${CMAKE_SOURCE_DIR}/cmake/tsan_absl_mutex.cc)
  # It defines absl::Mutex's own lock functions, which the analysis would flag as not locking;
  # and it is not instrumented itself, so that ctest, bash and python, which inherit the
  # LD_PRELOAD without a TSan runtime, still start (its __tsan_mutex_* calls are weak).
  set_source_files_properties(${CMAKE_SOURCE_DIR}/cmake/tsan_absl_mutex.cc PROPERTIES
                              COMPILE_OPTIONS "-Wno-thread-safety-analysis;-fno-sanitize=thread")
  target_link_libraries(normserve_tsan_absl_mutex PRIVATE absl::synchronization ${CMAKE_DL_LIBS})
endif()
