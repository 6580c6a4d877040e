// The observed batch norm kernel against float64 references: input moments against a long
// double two-pass, output against the affine and clamp in double, in channel-blocked,
// channels-last and plain layouts with channel counts no block divides.
#include "kernels/observed_batch_norm.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/kernels/blocked_layout.h"

namespace normserve {
namespace {

// Each channel's values have their own mean (up to 100) against a spread of 0.5 to 3: a
// one-pass sum of squares would cancel badly.
std::vector<float> Activations(int64_t batch, int64_t channels, int64_t spatial, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> center(-100.f, 100.f), spread(0.5f, 3.f);
  std::vector<float> v(batch * channels * spatial);
  for (int64_t r = 0; r < batch * channels; ++r) {
    std::normal_distribution<float> d(center(rng), spread(rng));
    for (int64_t s = 0; s < spatial; ++s) v[r * spatial + s] = d(rng);
  }
  return v;
}

// An affine mapping most channels' values across [lo, hi] (so a clamp cuts on both sides),
// from the data's own per-channel means.
BatchNormAffine AffineFor(const std::vector<float>& x, int64_t channels, int64_t spatial, float lo,
                          float hi) {
  BatchNormAffine a;
  a.lo = lo;
  a.hi = hi;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (int64_t c = 0; c < channels; ++c) {
    double sum = 0;
    for (int64_t s = 0; s < spatial; ++s) sum += x[c * spatial + s];
    a.mean.push_back(static_cast<float>(sum / spatial) + u(rng));
    a.scale.push_back(2.f + u(rng));
    a.shift.push_back(3.f + 2.f * u(rng));
  }
  a.scale[0] = 0.f;  // a gamma == 0 channel: the output is its shift
  return a;
}

struct Case {
  int64_t batch, channels, spatial, block;  // block == channels: channels-last
};

class ObservedBatchNormTest : public testing::TestWithParam<Case> {};

void CheckAgainstReference(const Case& k, float lo, float hi) {
  SCOPED_TRACE(testing::Message() << "batch " << k.batch << " channels " << k.channels
                                  << " spatial " << k.spatial << " block " << k.block << " clamp ["
                                  << lo << ", " << hi << "]");
  const std::vector<float> x = Activations(k.batch, k.channels, k.spatial, 3);
  const BatchNormAffine affine = AffineFor(x, k.channels, k.spatial, lo, hi);
  const std::vector<float> in = ToBlocked(x, k.batch, k.channels, k.spatial, k.block, 1e30f);
  std::vector<float> out(in.size(), 1e30f);
  const ObservedBatchNormShape shape{k.batch, k.channels, k.spatial, k.block};
  const std::vector<ChannelMoments> got =
      ObservedBatchNormForward(shape, in.data(), affine, out.data());
  ASSERT_EQ(got.size(), static_cast<size_t>(k.batch));
  int64_t clipped_low = 0, clipped_high = 0;
  for (int64_t n = 0; n < k.batch; ++n) {
    ASSERT_EQ(got[n].count, k.spatial);
    ASSERT_EQ(got[n].mean.size(), static_cast<size_t>(k.channels));
    for (int64_t c = 0; c < k.channels; ++c) {
      const float* p = x.data() + (n * k.channels + c) * k.spatial;
      long double sum = 0, ss = 0;
      for (int64_t s = 0; s < k.spatial; ++s) sum += p[s];
      const long double mean = sum / k.spatial;
      for (int64_t s = 0; s < k.spatial; ++s) ss += (p[s] - mean) * (p[s] - mean);
      EXPECT_NEAR(got[n].mean[c], static_cast<double>(mean),
                  1e-13 * std::fabs(static_cast<double>(mean)))
          << "sample " << n << " channel " << c;
      EXPECT_NEAR(got[n].m2[c], static_cast<double>(ss), 1e-11 * static_cast<double>(ss))
          << "sample " << n << " channel " << c;
      for (int64_t s = 0; s < k.spatial; ++s) {
        const double y =
            (static_cast<double>(p[s]) - affine.mean[c]) * affine.scale[c] + affine.shift[c];
        const double want = std::min(std::max(y, static_cast<double>(lo)), static_cast<double>(hi));
        clipped_low += y < lo;
        clipped_high += y > hi;
        const float o = out[BlockedIndex(n, c, s, k.channels, k.spatial, k.block)];
        // float32 arithmetic on values up to ~|600|: a few ulps of the terms.
        ASSERT_NEAR(o, want, 1e-4 + 1e-5 * std::fabs(y))
            << "sample " << n << " channel " << c << " position " << s;
      }
    }
    // Padding channels of the last block are written as zeros, as oneDNN expects.
    for (int64_t c = k.channels; c % k.block != 0; ++c)
      for (int64_t s = 0; s < k.spatial; ++s)
        ASSERT_EQ(out[BlockedIndex(n, c, s, k.channels, k.spatial, k.block)], 0.f)
            << "padding channel " << c;
  }
  if (std::isfinite(lo)) {
    EXPECT_GT(clipped_low, 0) << "the clamp's lower bound never applied";
  }
  if (std::isfinite(hi)) {
    EXPECT_GT(clipped_high, 0) << "the clamp's upper bound never applied";
  }
}

TEST_P(ObservedBatchNormTest, MatchesFloat64ReferenceWithReluAndRelu6AndNoClamp) {
  const float inf = std::numeric_limits<float>::infinity();
  CheckAgainstReference(GetParam(), 0.f, 6.f);  // ReLU6
  CheckAgainstReference(GetParam(), 0.f, inf);  // ReLU
  CheckAgainstReference(GetParam(), -inf, inf);
}

// The moments and outputs are the same bits whatever the thread count: a recovered session
// must recompute its log's moments exactly.
TEST_P(ObservedBatchNormTest, SameBitsForEveryThreadCount) {
  const Case k = GetParam();
  const std::vector<float> x = Activations(k.batch, k.channels, k.spatial, 5);
  const BatchNormAffine affine = AffineFor(x, k.channels, k.spatial, 0.f, 6.f);
  const std::vector<float> in = ToBlocked(x, k.batch, k.channels, k.spatial, k.block, 0.f);
  const ObservedBatchNormShape shape{k.batch, k.channels, k.spatial, k.block};
  const int threads = omp_get_max_threads();
  std::vector<float> out1(in.size()), out3(in.size());
  omp_set_num_threads(1);
  const std::vector<ChannelMoments> one =
      ObservedBatchNormForward(shape, in.data(), affine, out1.data());
  omp_set_num_threads(3);
  const std::vector<ChannelMoments> three =
      ObservedBatchNormForward(shape, in.data(), affine, out3.data());
  omp_set_num_threads(threads);
  for (int64_t n = 0; n < k.batch; ++n) {
    for (int64_t c = 0; c < k.channels; ++c) {
      ASSERT_EQ(one[n].mean[c], three[n].mean[c]) << "sample " << n << " channel " << c;
      ASSERT_EQ(one[n].m2[c], three[n].m2[c]) << "sample " << n << " channel " << c;
    }
  }
  EXPECT_EQ(out1, out3);
}

// Every vector copy of the kernel gives the baseline's bits: a session recovered on a host
// with another ISA must recompute its log's moments exactly.
TEST_P(ObservedBatchNormTest, SameBitsForEveryVectorIsa) {
  const Case k = GetParam();
  const std::vector<float> x = Activations(k.batch, k.channels, k.spatial, 13);
  const BatchNormAffine affine = AffineFor(x, k.channels, k.spatial, 0.f, 6.f);
  const std::vector<float> in = ToBlocked(x, k.batch, k.channels, k.spatial, k.block, 0.f);
  const ObservedBatchNormShape shape{k.batch, k.channels, k.spatial, k.block};
  std::vector<float> base_out(in.size());
  const std::vector<ChannelMoments> base =
      ObservedBatchNormForward(shape, in.data(), affine, base_out.data(), KernelIsa::kBaseline);
  int compared = 0;
  for (KernelIsa isa : {KernelIsa::kAvx2, KernelIsa::kAvx512, KernelIsa::kAuto}) {
    if (!CpuRuns(isa)) continue;
    ++compared;
    std::vector<float> out(in.size());
    const std::vector<ChannelMoments> got =
        ObservedBatchNormForward(shape, in.data(), affine, out.data(), isa);
    EXPECT_EQ(out, base_out) << "isa " << static_cast<int>(isa);
    for (int64_t n = 0; n < k.batch; ++n) {
      EXPECT_EQ(got[n].mean, base[n].mean) << "isa " << static_cast<int>(isa) << " sample " << n;
      EXPECT_EQ(got[n].m2, base[n].m2) << "isa " << static_cast<int>(isa) << " sample " << n;
    }
  }
  EXPECT_GT(compared, 0);
}

// In place (the plan's choice when the convolution's output has no other reader) gives the
// same bits as into a separate buffer.
TEST_P(ObservedBatchNormTest, InPlaceEqualsSeparateBuffer) {
  const Case k = GetParam();
  const std::vector<float> x = Activations(k.batch, k.channels, k.spatial, 9);
  const BatchNormAffine affine = AffineFor(x, k.channels, k.spatial, 0.f, 6.f);
  std::vector<float> in = ToBlocked(x, k.batch, k.channels, k.spatial, k.block, 0.f);
  const ObservedBatchNormShape shape{k.batch, k.channels, k.spatial, k.block};
  std::vector<float> out(in.size());
  const std::vector<ChannelMoments> separate =
      ObservedBatchNormForward(shape, in.data(), affine, out.data());
  const std::vector<ChannelMoments> in_place =
      ObservedBatchNormForward(shape, in.data(), affine, in.data());
  EXPECT_EQ(in, out);
  for (int64_t n = 0; n < k.batch; ++n) {
    EXPECT_EQ(separate[n].mean, in_place[n].mean) << "sample " << n;
    EXPECT_EQ(separate[n].m2, in_place[n].m2) << "sample " << n;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, ObservedBatchNormTest,
    testing::Values(Case{2, 37, 3001, 16},     // nChw16c, 3 padding channels, many tiles
                    Case{1, 21, 45, 8},        // nChw8c, one short tile
                    Case{2, 37, 3001, 37},     // channels-last, odd channel count
                    Case{1, 1000, 130, 1000},  // channels-last, wider than a tile's row budget
                    Case{3, 5, 700, 1},        // plain NCHW
                    Case{1, 24, 12544, 24}),   // MobileNetV2's 112x112 shape class, many segments
    [](const testing::TestParamInfo<Case>& i) {
      return "n" + std::to_string(i.param.batch) + "_c" + std::to_string(i.param.channels) + "_s" +
             std::to_string(i.param.spatial) + "_b" + std::to_string(i.param.block);
    });

}  // namespace
}  // namespace normserve
