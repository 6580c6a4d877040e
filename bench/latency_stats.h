// Latency summary shared by the benchmark's C++ runners; quantiles are defined exactly as
// in ort_bench.js and torch_bench.py so the table compares like with like.
#ifndef NORMSERVE_BENCH_LATENCY_STATS_H_
#define NORMSERVE_BENCH_LATENCY_STATS_H_

#include <algorithm>
#include <cstdint>
#include <vector>

namespace normserve {
namespace bench {

struct LatencyStats {
  double median_ms = 0;
  double p90_ms = 0;
  double p99_ms = 0;
  double mean_ms = 0;
  double min_ms = 0;
  int64_t iters = 0;
};

// Linear interpolation between closest ranks (numpy's default). `sorted` is non-empty.
inline double Quantile(const std::vector<double>& sorted, double q) {
  const double pos = q * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(pos);
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - static_cast<double>(lo));
}

inline LatencyStats Summarize(std::vector<double> times_ms) {
  LatencyStats s;
  if (times_ms.empty()) return s;
  double sum = 0;
  for (double t : times_ms) sum += t;
  std::sort(times_ms.begin(), times_ms.end());
  s.median_ms = Quantile(times_ms, 0.5);
  s.p90_ms = Quantile(times_ms, 0.9);
  s.p99_ms = Quantile(times_ms, 0.99);
  s.mean_ms = sum / static_cast<double>(times_ms.size());
  s.min_ms = times_ms.front();
  s.iters = static_cast<int64_t>(times_ms.size());
  return s;
}

}  // namespace bench
}  // namespace normserve

#endif  // NORMSERVE_BENCH_LATENCY_STATS_H_
