// The machine's attainable convolution throughput: one large 3x3 convolution run through
// oneDNN with the layouts it prefers, the yardstick for the engine's achieved GFLOP/s.
#ifndef NORMSERVE_BENCH_CONV_PEAK_H_
#define NORMSERVE_BENCH_CONV_PEAK_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace normserve {
namespace bench {

struct ConvPeakOptions {
  // N x C x H x W input, K output channels, 3x3 kernel, stride 1, pad 1 (same size out).
  int64_t batch = 1;
  int64_t channels = 256;
  int64_t out_channels = 256;
  int64_t height = 56;
  int64_t width = 56;
  int threads = 2;
  double seconds = 3.0;  // timed budget after warmup
  int warmup = 10;
  int min_iters = 20;
  // bf16 source, weights and destination (f32 bias), as in a bf16 plan.
  bool bf16 = false;
};

struct ConvPeakResult {
  double gflop_per_run = 0;
  double median_ms = 0;
  double min_ms = 0;
  double gflops = 0;       // at the median time: what a steady run attains
  double gflops_best = 0;  // at the fastest run
  int64_t iters = 0;
  std::string implementation;  // oneDNN's name for the chosen kernel, e.g. brgconv:avx512_core
};

absl::StatusOr<ConvPeakResult> MeasureConvPeak(const ConvPeakOptions& options);

}  // namespace bench
}  // namespace normserve

#endif  // NORMSERVE_BENCH_CONV_PEAK_H_
