#include "kernels/channel_moments.h"

namespace normserve {

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
    double sum = 0;
    for (int64_t i = 0; i < spatial; ++i) sum += p[i];
    const double mean = sum / static_cast<double>(spatial);
    double m2 = 0;
    for (int64_t i = 0; i < spatial; ++i) m2 += (p[i] - mean) * (p[i] - mean);
    samples[r / channels].mean[r % channels] = mean;
    samples[r / channels].m2[r % channels] = m2;
  }
  return samples;
}

}  // namespace normserve
