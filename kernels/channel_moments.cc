#include "kernels/channel_moments.h"

#include <algorithm>

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

// Lanes of one block task: at most this many channels' sums live at once.
constexpr int64_t kBlockLanes = 16;

// Channels [j0, j1) of one block: p[s * stride + j] for s < spatial.
void BlockMoments(const float* p, int64_t spatial, int64_t stride, int64_t j0, int64_t j1,
                  double* mean, double* m2) {
  const int64_t n = j1 - j0;
  double sum[kBlockLanes] = {}, mu[kBlockLanes], dev[kBlockLanes] = {};
  for (int64_t s = 0; s < spatial; ++s) {
    const float* row = p + s * stride + j0;
    for (int64_t j = 0; j < n; ++j) sum[j] += static_cast<double>(row[j]);
  }
  for (int64_t j = 0; j < n; ++j) mu[j] = sum[j] / static_cast<double>(spatial);
  for (int64_t s = 0; s < spatial; ++s) {
    const float* row = p + s * stride + j0;
    for (int64_t j = 0; j < n; ++j) {
      const double d = static_cast<double>(row[j]) - mu[j];
      dev[j] += d * d;
    }
  }
  for (int64_t j = 0; j < n; ++j) {
    mean[j] = mu[j];
    m2[j] = dev[j];
  }
}

// One ChannelMoments per sample, `channels` wide, to be filled.
std::vector<ChannelMoments> Sized(int64_t batch, int64_t channels, int64_t spatial) {
  std::vector<ChannelMoments> samples(batch);
  for (ChannelMoments& m : samples) {
    m.count = spatial;
    m.mean.resize(channels);
    m.m2.resize(channels);
  }
  return samples;
}

}  // namespace

std::vector<ChannelMoments> ChannelMomentsOf(const float* data, int64_t batch, int64_t channels,
                                             int64_t spatial) {
  std::vector<ChannelMoments> samples = Sized(batch, channels, spatial);
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

std::vector<ChannelMoments> BlockedChannelMomentsOf(const float* data, int64_t batch,
                                                    int64_t channels, int64_t spatial,
                                                    int64_t block) {
  std::vector<ChannelMoments> samples = Sized(batch, channels, spatial);
  const int64_t blocks = (channels + block - 1) / block;
  const int64_t chunks = (block + kBlockLanes - 1) / kBlockLanes;  // lane groups of a block
  const int64_t tasks = batch * blocks * chunks;
#pragma omp parallel for schedule(static) if (batch * channels * spatial >= (int64_t{1} << 16))
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t n = t / (blocks * chunks), b = t / chunks % blocks, k = t % chunks;
    const int64_t first = b * block;  // the block's first channel
    const int64_t j0 = k * kBlockLanes;
    const int64_t j1 = std::min({block, j0 + kBlockLanes, channels - first});
    if (j1 <= j0) continue;  // padding channels
    const float* p = data + (n * blocks + b) * spatial * block;
    BlockMoments(p, spatial, block, j0, j1, samples[n].mean.data() + first + j0,
                 samples[n].m2.data() + first + j0);
  }
  return samples;
}

}  // namespace normserve
