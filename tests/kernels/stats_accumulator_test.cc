// Exact accumulation: any order or split of the samples gives the statistics of all
// values (within 1e-12), and the SEM comes from the spread of per-request means.
#include "kernels/stats_accumulator.h"

#include <algorithm>
#include <random>

#include "gtest/gtest.h"

namespace normserve {
namespace {

// One request: `channels` x `values` with a per-request channel offset.
ChannelMoments MakeSample(const std::vector<std::vector<double>>& v) {
  ChannelMoments m;
  m.count = v[0].size();
  for (const auto& ch : v) {
    double mean = 0, m2 = 0;
    for (double x : ch) mean += x;
    mean /= ch.size();
    for (double x : ch) m2 += (x - mean) * (x - mean);
    m.mean.push_back(mean);
    m.m2.push_back(m2);
  }
  return m;
}

struct Simulation {
  std::vector<std::vector<std::vector<double>>> requests;  // [request][channel][value]
  Simulation(int n, int channels, int values, unsigned seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> nd(0, 1);
    for (int r = 0; r < n; ++r) {
      std::vector<std::vector<double>> req(channels);
      for (int c = 0; c < channels; ++c) {
        const double image_mean = nd(rng) + c;  // between-request spread
        for (int i = 0; i < values; ++i) req[c].push_back(image_mean + nd(rng));
      }
      requests.push_back(std::move(req));
    }
  }
};

TEST(StatsAccumulator, AnyOrderAndSplitEqualsTwoPassOverAllValues) {
  Simulation sim(300, 3, 16, 1);
  // Direct two-pass float64 over every value of channel c.
  std::vector<double> want_mean(3), want_var(3);
  for (int c = 0; c < 3; ++c) {
    double sum = 0, n = 0;
    for (auto& r : sim.requests)
      for (double x : r[c]) sum += x, ++n;
    want_mean[c] = sum / n;
    double m2 = 0;
    for (auto& r : sim.requests)
      for (double x : r[c]) m2 += (x - want_mean[c]) * (x - want_mean[c]);
    want_var[c] = m2 / (n - 1);
  }
  std::mt19937 rng(2);
  for (int trial = 0; trial < 5; ++trial) {
    std::vector<int> order(sim.requests.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::shuffle(order.begin(), order.end(), rng);
    // Split into 4 partial accumulators (as 4 concurrent workers would), then merge.
    std::vector<LayerAccumulator> parts(4, LayerAccumulator(3));
    for (size_t i = 0; i < order.size(); ++i)
      ASSERT_TRUE(parts[rng() % 4].Add(MakeSample(sim.requests[order[i]])).ok());
    LayerAccumulator total(3);
    for (auto& p : parts) total.Merge(p);
    EXPECT_EQ(total.requests(), 300);
    EXPECT_EQ(total.values_per_channel(), 300 * 16);
    for (int c = 0; c < 3; ++c) {
      EXPECT_NEAR(total.Mean()[c], want_mean[c], 1e-12 * std::max(1.0, std::fabs(want_mean[c])));
      EXPECT_NEAR(total.UnbiasedVariance()[c], want_var[c], 1e-12 * want_var[c]);
    }
  }
}

TEST(StatsAccumulator, IssueSimulationTotalVarianceAndRequestLevelSem) {
  // 2000 requests of 1x4x8x8, per-image means ~N(0,1), pixel noise ~N(0,1): the true
  // variance is 2 and SEM = sqrt(1 + 1/64) / sqrt(2000) = 0.0225, while the per-value
  // formula std / sqrt(values) would claim 0.0039.
  std::mt19937_64 rng(7);
  std::normal_distribution<double> nd(0, 1);
  LayerAccumulator acc(4);
  for (int r = 0; r < 2000; ++r) {
    std::vector<std::vector<double>> req(4);
    for (int c = 0; c < 4; ++c) {
      const double m = nd(rng);
      for (int i = 0; i < 64; ++i) req[c].push_back(m + nd(rng));
    }
    ASSERT_TRUE(acc.Add(MakeSample(req)).ok());
  }
  for (int c = 0; c < 4; ++c) {
    EXPECT_NEAR(acc.UnbiasedVariance()[c], 2.0, 0.15);
    EXPECT_NEAR(acc.StandardError()[c], 0.0225, 0.002);
    const double per_value = std::sqrt(acc.UnbiasedVariance()[c] / acc.values_per_channel());
    EXPECT_LT(per_value, 0.005);
    EXPECT_NEAR(acc.RelativeStandardError()[c],
                acc.StandardError()[c] / std::sqrt(acc.UnbiasedVariance()[c]), 1e-12);
  }
}

TEST(StatsAccumulator, OneValuePerRequestLayersAccumulateAcrossRequests) {
  // BatchNorm1d on 1 x C: each request has one value per channel (M2 = 0).
  LayerAccumulator acc(2);
  const std::vector<double> xs = {1, 2, 4, 8};
  for (double x : xs) ASSERT_TRUE(acc.Add(ChannelMoments{1, {x, -x}, {0, 0}}).ok());
  EXPECT_DOUBLE_EQ(acc.Mean()[0], 3.75);
  EXPECT_NEAR(acc.UnbiasedVariance()[0], 9.583333333333334, 1e-12);  // numpy var(ddof=1)
  EXPECT_NEAR(acc.UnbiasedVariance()[1], 9.583333333333334, 1e-12);
}

TEST(StatsAccumulator, NonFiniteSampleIsRefusedWhole) {
  LayerAccumulator acc(2);
  ASSERT_TRUE(acc.Add(ChannelMoments{4, {1, 2}, {3, 4}}).ok());
  const double nan = std::numeric_limits<double>::quiet_NaN();
  EXPECT_EQ(acc.Add(ChannelMoments{4, {1, nan}, {3, 4}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(acc.Add(ChannelMoments{4, {1, 2}, {std::numeric_limits<double>::infinity(), 4}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(acc.Add(ChannelMoments{4, {1}, {3}}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(acc.requests(), 1);
  EXPECT_DOUBLE_EQ(acc.Mean()[1], 2);
}

TEST(StatsAccumulator, DriftAndPriorBlend) {
  BnStatistics frozen{{0, 1}, {1, 4}};
  auto same = ComputeDrift(frozen, frozen.mean, frozen.var);
  EXPECT_DOUBLE_EQ(same.mean_shift, 0);
  EXPECT_DOUBLE_EQ(same.kl, 0);
  auto d = ComputeDrift(frozen, {1, 1}, {1, 16});
  EXPECT_DOUBLE_EQ(d.mean_shift, 0.5);  // (1/1 + 0/2) / 2
  EXPECT_NEAR(d.log_var_ratio, std::log(4.0) / 2, 1e-12);
  EXPECT_NEAR(d.kl, (0.5 * 1 + 0.5 * (4 - 1 - std::log(4.0))) / 2, 1e-12);
  auto blended = BlendWithPrior(frozen, {2, 3}, {3, 8}, 3, 1);
  EXPECT_DOUBLE_EQ(blended.mean[0], 0.5);  // (3*0 + 1*2) / 4
  EXPECT_DOUBLE_EQ(blended.var[1], 5);     // (3*4 + 1*8) / 4
}

}  // namespace
}  // namespace normserve
