// Per-channel float64 moments, plain and read in place from channel-blocked and
// channels-last layouts, against a long double two-pass reference.
#include "kernels/channel_moments.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "tests/kernels/blocked_layout.h"

namespace normserve {
namespace {

struct Reference {
  std::vector<std::vector<long double>> mean, m2;  // [sample][channel]
};

// data is plain [batch][channels][spatial].
Reference TwoPass(const std::vector<float>& data, int64_t batch, int64_t channels,
                  int64_t spatial) {
  Reference r;
  r.mean.assign(batch, std::vector<long double>(channels));
  r.m2.assign(batch, std::vector<long double>(channels));
  for (int64_t n = 0; n < batch; ++n) {
    for (int64_t c = 0; c < channels; ++c) {
      const float* p = data.data() + (n * channels + c) * spatial;
      long double sum = 0, ss = 0;
      for (int64_t s = 0; s < spatial; ++s) sum += p[s];
      const long double mean = sum / spatial;
      for (int64_t s = 0; s < spatial; ++s) ss += (p[s] - mean) * (p[s] - mean);
      r.mean[n][c] = mean;
      r.m2[n][c] = ss;
    }
  }
  return r;
}

// Activations with a mean large against their spread: a one-pass sum of squares would
// cancel badly here.
std::vector<float> Activations(int64_t count, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(100.f, 0.5f);
  std::vector<float> v(count);
  for (float& x : v) x = d(rng);
  return v;
}

void ExpectMatches(const std::vector<ChannelMoments>& got, const Reference& want, int64_t spatial) {
  ASSERT_EQ(got.size(), want.mean.size());
  for (size_t n = 0; n < got.size(); ++n) {
    EXPECT_EQ(got[n].count, spatial);
    for (size_t c = 0; c < want.mean[n].size(); ++c) {
      EXPECT_NEAR(got[n].mean[c], static_cast<double>(want.mean[n][c]),
                  1e-13 * std::fabs(static_cast<double>(want.mean[n][c])))
          << "sample " << n << " channel " << c;
      EXPECT_NEAR(got[n].m2[c], static_cast<double>(want.m2[n][c]),
                  1e-11 * static_cast<double>(want.m2[n][c]))
          << "sample " << n << " channel " << c;
    }
  }
}

TEST(ChannelMoments, PlainMatchesLongDoubleTwoPass) {
  for (int64_t spatial : {1, 7, 8, 49, 3136}) {
    const int64_t batch = 2, channels = 5;
    const std::vector<float> x = Activations(batch * channels * spatial, 3);
    ExpectMatches(ChannelMomentsOf(x.data(), batch, channels, spatial),
                  TwoPass(x, batch, channels, spatial), spatial);
  }
}

TEST(ChannelMoments, BlockedAndChannelsLastReadInPlace) {
  const int64_t batch = 3, spatial = 45;
  for (int64_t channels : {8, 20, 40}) {
    const std::vector<float> x = Activations(batch * channels * spatial, 11);
    const Reference want = TwoPass(x, batch, channels, spatial);
    for (int64_t block : {int64_t{8}, int64_t{16}, channels}) {  // channels: channels-last
      SCOPED_TRACE(testing::Message() << "channels " << channels << " block " << block);
      // The padding channels hold garbage: they must not be read.
      const std::vector<float> b = ToBlocked(x, batch, channels, spatial, block, 1e30f);
      ExpectMatches(BlockedChannelMomentsOf(b.data(), batch, channels, spatial, block), want,
                    spatial);
    }
  }
}

}  // namespace
}  // namespace normserve
