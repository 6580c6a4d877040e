// Statistics hooks: observed BN layers report per-sample, per-channel moments of their
// input in float64, and new statistics give a new plan without re-reading the file.
#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/engine.h"
#include "tests/kernels/conv_bn_clip_chain.h"
#include "tests/kernels/conv_bn_fixture.h"

namespace normserve {
namespace {

using testing::ConvBnClipChain;

TEST(StatsHooks, ObservedLayerMomentsMatchFloat64Reference) {
  testing::ConvBnFixture f;
  auto m = Model::LoadBytes(f.onnx);
  ASSERT_TRUE(m.ok());
  CompileOptions o;
  o.observed_bn_layers = {"bn"};
  auto c = CompiledModel::Compile(*m, o);
  ASSERT_TRUE(c.ok()) << c.status();
  std::mt19937 rng(21);
  const int n = 3, plane = 25;
  auto x = testing::RandomVector(n * 3 * 9 * 9, &rng, -2.f, 2.f);
  std::vector<Tensor> out;
  BnObservations obs;
  ASSERT_TRUE((*c)->NewContext()->Run({TensorView{x.data(), {n, 3, 9, 9}}}, &out, &obs).ok());
  // Outputs are unchanged by observing.
  const auto want_out = f.Ref(x, n);
  for (size_t i = 0; i < want_out.size(); ++i) ASSERT_NEAR(out[0].data[i], want_out[i], 1e-5);
  ASSERT_EQ(obs.per_layer.count("bn"), 1u);
  const auto& samples = obs.per_layer["bn"];
  ASSERT_EQ(samples.size(), static_cast<size_t>(n));
  const auto conv = f.ConvRef(x, n);
  for (int s = 0; s < n; ++s) {
    EXPECT_EQ(samples[s].count, plane);
    for (int ch = 0; ch < 8; ++ch) {
      double mean = 0, m2 = 0;
      for (int i = 0; i < plane; ++i) mean += conv[(s * 8 + ch) * plane + i];
      mean /= plane;
      for (int i = 0; i < plane; ++i) m2 += std::pow(conv[(s * 8 + ch) * plane + i] - mean, 2);
      EXPECT_NEAR(samples[s].mean[ch], mean, 1e-5 * (1 + std::fabs(mean)));
      EXPECT_NEAR(samples[s].m2[ch], m2, 1e-5 * (1 + m2));
    }
  }
}

// The live statistics plan may use Winograd, whose rounding depends on the batch: a
// batch-4 run must still give each sample exactly what a batch-1 run of it gives.
TEST(StatsHooks, LiveStatisticsPlanIsBatchInvariant) {
  auto m = Model::LoadFile(std::string(NORMSERVE_SOURCE_DIR) +
                           "/models/repository/fashion_bn_cnn/1/model.onnx");
  ASSERT_TRUE(m.ok()) << m.status();
  const CompileOptions o = LiveStatisticsOptions(**m, 1);
  EXPECT_TRUE(o.observed_winograd);
  EXPECT_EQ(o.observed_bn_layers.size(), (*m)->bn_layers().size());
  auto c = CompiledModel::Compile(*m, o);
  ASSERT_TRUE(c.ok()) << c.status();
  std::mt19937 rng(5);
  const int n = 4, per = 28 * 28;
  auto x = testing::RandomVector(n * per, &rng, 0.f, 1.f);
  auto ctx = (*c)->NewContext();
  std::vector<Tensor> out;
  BnObservations batched;
  ASSERT_TRUE(ctx->Run({TensorView{x.data(), {n, 1, 28, 28}}}, &out, &batched).ok());
  for (int s = 0; s < n; ++s) {
    BnObservations one;
    ASSERT_TRUE(ctx->Run({TensorView{x.data() + s * per, {1, 1, 28, 28}}}, &out, &one).ok());
    for (const BnLayerInfo& l : (*m)->bn_layers()) {
      ASSERT_EQ(batched.per_layer[l.name].size(), static_cast<size_t>(n)) << l.name;
      EXPECT_EQ(batched.per_layer[l.name][s].mean, one.per_layer[l.name][0].mean) << l.name;
      EXPECT_EQ(batched.per_layer[l.name][s].m2, one.per_layer[l.name][0].m2) << l.name;
    }
  }
}

void ExpectMomentsOf(const std::vector<ChannelMoments>& got, const std::vector<double>& values,
                     int n, int channels, int plane) {
  ASSERT_EQ(got.size(), static_cast<size_t>(n));
  for (int s = 0; s < n; ++s) {
    EXPECT_EQ(got[s].count, plane);
    for (int ch = 0; ch < channels; ++ch) {
      const double* v = values.data() + (static_cast<size_t>(s) * channels + ch) * plane;
      double mean = 0, m2 = 0;
      for (int i = 0; i < plane; ++i) mean += v[i];
      mean /= plane;
      for (int i = 0; i < plane; ++i) m2 += (v[i] - mean) * (v[i] - mean);
      EXPECT_NEAR(got[s].mean[ch], mean, 1e-5 * (1 + std::fabs(mean))) << "channel " << ch;
      EXPECT_NEAR(got[s].m2[ch], m2, 1e-5 * (1 + m2)) << "channel " << ch;
    }
  }
}

TEST(StatsHooks, ObservedBatchNormWithRelu6FeedsTheNextLayerExactly) {
  ConvBnClipChain f;
  auto m = Model::LoadBytes(f.onnx);
  ASSERT_TRUE(m.ok()) << m.status();
  CompileOptions o;
  o.observed_bn_layers = {"bn1", "bn2"};
  auto c = CompiledModel::Compile(*m, o);
  ASSERT_TRUE(c.ok()) << c.status();
  // The first layer runs as one kernel with its clamp: no eltwise step is left for the Clip.
  const std::string plan = (*c)->DescribePlan();
  EXPECT_NE(plan.find("observed_batch_norm bn1 +eltwise_clip"), std::string::npos) << plan;
  EXPECT_EQ(plan.find("eltwise relu6"), std::string::npos) << plan;
  std::mt19937 rng(8);
  const int n = 2, plane = ConvBnClipChain::kH * ConvBnClipChain::kW;
  auto x = testing::RandomVector(n * 3 * plane, &rng, -2.f, 2.f);
  std::vector<Tensor> out;
  BnObservations obs;
  ASSERT_TRUE((*c)->NewContext()->Run({TensorView{x.data(), {n, 3, 12, 12}}}, &out, &obs).ok());
  const ConvBnClipChain::Values want = f.Ref(x, n);
  int clipped_low = 0, clipped_high = 0;
  for (int s = 0; s < n; ++s)
    for (int ch = 0; ch < ConvBnClipChain::kMid; ++ch)
      for (int p = 0; p < plane; ++p) {
        const double v = want.c1[(s * ConvBnClipChain::kMid + ch) * plane + p];
        const double y = (v - f.m1[ch]) / std::sqrt(f.v1[ch] + 1e-5) * f.g1[ch] + f.b1[ch];
        clipped_low += y < 0;
        clipped_high += y > 6;
      }
  EXPECT_GT(clipped_low, 0);
  EXPECT_GT(clipped_high, 0);
  ExpectMomentsOf(obs.per_layer["bn1"], want.c1, n, ConvBnClipChain::kMid, plane);
  ExpectMomentsOf(obs.per_layer["bn2"], want.c2, n, ConvBnClipChain::kOut, plane);
  ASSERT_EQ(out.size(), 1u);
  for (size_t i = 0; i < want.y.size(); ++i) ASSERT_NEAR(out[0].data[i], want.y[i], 1e-4) << i;
}

TEST(StatsHooks, StopAfterObservedProducesNoOutputs) {
  testing::ConvBnFixture f;
  auto m = Model::LoadBytes(f.onnx);
  CompileOptions o;
  o.observed_bn_layers = {"bn"};
  o.stop_after_observed = true;
  auto c = CompiledModel::Compile(*m, o);
  ASSERT_TRUE(c.ok()) << c.status();
  std::vector<float> x(3 * 81, 0.5f);
  std::vector<Tensor> out;
  BnObservations obs;
  ASSERT_TRUE((*c)->NewContext()->Run({TensorView{x.data(), {1, 3, 9, 9}}}, &out, &obs).ok());
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(obs.per_layer.count("bn"), 1u);
}

TEST(StatsHooks, UnknownObservedLayerIsNotFound) {
  testing::ConvBnFixture f;
  auto m = Model::LoadBytes(f.onnx);
  CompileOptions o;
  o.observed_bn_layers = {"nope"};
  EXPECT_EQ(CompiledModel::Compile(*m, o).status().code(), absl::StatusCode::kNotFound);
}

TEST(StatsHooks, NewStatisticsGiveANewPlanAndSurviveOnnxExport) {
  testing::ConvBnFixture f;
  auto m = Model::LoadBytes(f.onnx);
  ASSERT_TRUE(m.ok());
  BnStatistics s{{0.1, -0.2, 0.3, 0, 1, -1, 0.5, 2}, {1, 2, 3, 0.5, 0.25, 4, 1.5, 0.75}};
  auto updated = (*m)->WithBnStatistics({{"bn", s}});
  ASSERT_TRUE(updated.ok()) << updated.status();
  // The original model keeps its statistics.
  EXPECT_NEAR((*m)->GetBnStatistics("bn")->mean[0], f.mean[0], 1e-7);
  std::mt19937 rng(22);
  auto x = testing::RandomVector(2 * 3 * 81, &rng);
  const auto want = f.Ref(x, 2, s.mean, s.var);
  auto check = [&](std::shared_ptr<const Model> model) {
    auto c = CompiledModel::Compile(model);
    ASSERT_TRUE(c.ok()) << c.status();
    std::vector<Tensor> out;
    ASSERT_TRUE((*c)->NewContext()->Run({TensorView{x.data(), {2, 3, 9, 9}}}, &out).ok());
    for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(out[0].data[i], want[i], 1e-5) << i;
  };
  check(*updated);
  auto bytes = (*updated)->SerializeOnnx();
  ASSERT_TRUE(bytes.ok());
  auto reloaded = Model::LoadBytes(*bytes);
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  check(*reloaded);
}

TEST(StatsHooks, InvalidStatisticsAreRefused) {
  testing::ConvBnFixture f;
  auto m = Model::LoadBytes(f.onnx);
  EXPECT_EQ((*m)->WithBnStatistics({{"bn", BnStatistics{{0}, {1}}}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*m)->WithBnStatistics(
                    {{"bn", BnStatistics{std::vector<double>(8, 0), std::vector<double>(8, -1)}}})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*m)->WithBnStatistics({{"zz", BnStatistics{}}}).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace normserve
