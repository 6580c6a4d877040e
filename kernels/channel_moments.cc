#include "kernels/channel_moments.h"

namespace normserve {
namespace {

// sum_i f(p[i]) in float64 over kLanes independent partial sums (element i goes to lane
// i % kLanes), added up in a fixed order at the end: the compiler can vectorize it (one
// running sum is a chain of dependent adds it may not reorder), and the result is the
// same for every thread count and call.
constexpr int kLanes = 8;
template <typename F>
double LaneSum(const float* p, int64_t n, F f) {
  double lane[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) lane[j] += f(static_cast<double>(p[i + j]));
  }
  for (int j = 0; i < n; ++i, ++j) lane[j] += f(static_cast<double>(p[i]));
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

}  // namespace

std::vector<ChannelMoments> ChannelMomentsOf(const float* data, int64_t batch, int64_t channels,
                                             int64_t spatial) {
  std::vector<ChannelMoments> samples(batch);
  for (ChannelMoments& m : samples) {
    m.count = spatial;
    m.mean.resize(channels);
    m.m2.resize(channels);
  }
  const int64_t rows = batch * channels;
  // Small activations (a 1 x C head) are not worth waking the thread team for.
#pragma omp parallel for schedule(static) if (rows * spatial >= (int64_t{1} << 16))
  for (int64_t r = 0; r < rows; ++r) {
    const float* p = data + r * spatial;
    const double mean =
        LaneSum(p, spatial, [](double x) { return x; }) / static_cast<double>(spatial);
    const double m2 = LaneSum(p, spatial, [mean](double x) { return (x - mean) * (x - mean); });
    samples[r / channels].mean[r % channels] = mean;
    samples[r / channels].m2[r % channels] = m2;
  }
  return samples;
}

}  // namespace normserve
