// GroupNormForward against a float64 two-pass reference, in both layouts, with and
// without ReLU, and batch independence (a sample's output does not depend on the batch).
#include "kernels/group_norm_kernel.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace normserve {
namespace {

struct Case {
  int64_t batch, channels, spatial, groups;
  bool channels_last, relu;
};

// x in [N, C, S] order; result in [N, C, S] order.
std::vector<double> Reference(const Case& k, const std::vector<float>& x,
                              const std::vector<float>& gamma, const std::vector<float>& beta,
                              double eps) {
  std::vector<double> y(x.size());
  const int64_t per = k.channels / k.groups;
  for (int64_t b = 0; b < k.batch; ++b) {
    for (int64_t g = 0; g < k.groups; ++g) {
      double sum = 0;
      for (int64_t c = g * per; c < (g + 1) * per; ++c)
        for (int64_t s = 0; s < k.spatial; ++s) sum += x[(b * k.channels + c) * k.spatial + s];
      const double mean = sum / (per * k.spatial);
      double m2 = 0;
      for (int64_t c = g * per; c < (g + 1) * per; ++c)
        for (int64_t s = 0; s < k.spatial; ++s) {
          const double d = x[(b * k.channels + c) * k.spatial + s] - mean;
          m2 += d * d;
        }
      const double rstd = 1 / std::sqrt(m2 / (per * k.spatial) + eps);
      for (int64_t c = g * per; c < (g + 1) * per; ++c)
        for (int64_t s = 0; s < k.spatial; ++s) {
          const int64_t i = (b * k.channels + c) * k.spatial + s;
          double v = (x[i] - mean) * rstd * gamma[c] + beta[c];
          y[i] = k.relu ? std::max(v, 0.0) : v;
        }
    }
  }
  return y;
}

// [N, C, S] -> [N, S, C] when channels_last.
std::vector<float> ToLayout(const Case& k, const std::vector<float>& x) {
  if (!k.channels_last) return x;
  std::vector<float> out(x.size());
  for (int64_t b = 0; b < k.batch; ++b)
    for (int64_t c = 0; c < k.channels; ++c)
      for (int64_t s = 0; s < k.spatial; ++s)
        out[(b * k.spatial + s) * k.channels + c] = x[(b * k.channels + c) * k.spatial + s];
  return out;
}

float At(const Case& k, const std::vector<float>& y, int64_t b, int64_t c, int64_t s) {
  return k.channels_last ? y[(b * k.spatial + s) * k.channels + c]
                         : y[(b * k.channels + c) * k.spatial + s];
}

class GroupNormKernelTest : public ::testing::TestWithParam<Case> {};

TEST_P(GroupNormKernelTest, MatchesFloat64Reference) {
  const Case k = GetParam();
  std::mt19937 rng(7);
  // An offset mean makes a naive float32 E[x^2] - E[x]^2 visibly wrong.
  std::normal_distribution<float> dist(3.f, 2.f);
  std::vector<float> x(k.batch * k.channels * k.spatial), gamma(k.channels), beta(k.channels);
  for (float& v : x) v = dist(rng);
  for (float& v : gamma) v = dist(rng) / 3;
  for (float& v : beta) v = dist(rng) - 3;
  const float eps = 1e-5f;
  const std::vector<double> want = Reference(k, x, gamma, beta, eps);
  const std::vector<float> in = ToLayout(k, x);
  std::vector<float> out(in.size());
  GroupNormShape shape{k.batch, k.channels, k.spatial, k.groups, k.channels_last};
  GroupNormForward(shape, in.data(), gamma.data(), beta.data(), eps, k.relu, out.data());
  double worst = 0;
  for (int64_t b = 0; b < k.batch; ++b)
    for (int64_t c = 0; c < k.channels; ++c)
      for (int64_t s = 0; s < k.spatial; ++s) {
        const double w = want[(b * k.channels + c) * k.spatial + s];
        worst = std::max(worst, std::abs(At(k, out, b, c, s) - w) / (1 + std::abs(w)));
      }
  EXPECT_LT(worst, 2e-6);

  // Each sample alone gives bit-identical output.
  for (int64_t b = 0; b < k.batch; ++b) {
    Case one = k;
    one.batch = 1;
    std::vector<float> xb(x.begin() + b * k.channels * k.spatial,
                          x.begin() + (b + 1) * k.channels * k.spatial);
    const std::vector<float> inb = ToLayout(one, xb);
    std::vector<float> outb(inb.size());
    GroupNormShape s1{1, k.channels, k.spatial, k.groups, k.channels_last};
    GroupNormForward(s1, inb.data(), gamma.data(), beta.data(), eps, k.relu, outb.data());
    for (int64_t c = 0; c < k.channels; ++c)
      for (int64_t s = 0; s < k.spatial; ++s)
        ASSERT_EQ(At(one, outb, 0, c, s), At(k, out, b, c, s));
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, GroupNormKernelTest,
                         ::testing::Values(Case{1, 64, 56 * 56, 8, true, true},
                                           Case{3, 64, 7 * 7, 32, true, false},
                                           Case{2, 48, 5 * 3, 48, false, false},  // instance norm
                                           Case{2, 12, 17, 3, false, true},
                                           Case{1, 20, 1, 4, true, false},
                                           Case{4, 30, 9, 5, true, true}));

}  // namespace
}  // namespace normserve
