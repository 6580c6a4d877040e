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
#include "tests/kernels/conv_bn_fixture.h"
#include "tests/kernels/onnx_builder.h"

namespace normserve {
namespace {

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

// Conv(3->24, 3x3) -> BN -> Clip(0, 6) -> Conv(24->16, 1x1) -> BN -> Relu with both BN
// layers observed: the observed plan applies the first BN and its ReLU6 in its own kernel
// (observed_batch_norm.h), so the second layer's moments and the outputs check that kernel's
// output against a float64 reference, 24 channels filling no channel block.
struct ConvBnClipChain {
  static constexpr int kIn = 3, kMid = 24, kOut = 16, kH = 12, kW = 12;
  std::vector<float> w1, g1, b1, m1, v1, w2, g2, b2, m2, v2;
  std::string onnx;

  ConvBnClipChain() {
    std::mt19937 rng(31);
    w1 = testing::RandomVector(kMid * kIn * 9, &rng);
    g1 = testing::RandomVector(kMid, &rng, 1.f, 3.f);
    b1 = testing::RandomVector(kMid, &rng, 0.f, 3.f);
    m1 = testing::RandomVector(kMid, &rng, -1.f, 1.f);
    v1 = testing::RandomVector(kMid, &rng, 0.5f, 2.f);
    w2 = testing::RandomVector(kOut * kMid, &rng, -0.5f, 0.5f);
    g2 = testing::RandomVector(kOut, &rng, 0.5f, 1.5f);
    b2 = testing::RandomVector(kOut, &rng);
    m2 = testing::RandomVector(kOut, &rng, -1.f, 1.f);
    v2 = testing::RandomVector(kOut, &rng, 0.5f, 2.f);
    testing::OnnxBuilder m;
    m.Input("x", {-1, kIn, kH, kW});
    m.Output("y", {-1, kOut, kH, kW});
    m.Initializer("w1", {kMid, kIn, 3, 3}, w1);
    m.Initializer("w2", {kOut, kMid, 1, 1}, w2);
    for (const auto& [name, v] : std::vector<std::pair<std::string, std::vector<float>>>{
             {"g1", g1}, {"b1", b1}, {"m1", m1}, {"v1", v1}})
      m.Initializer(name, {kMid}, v);
    for (const auto& [name, v] : std::vector<std::pair<std::string, std::vector<float>>>{
             {"g2", g2}, {"b2", b2}, {"m2", m2}, {"v2", v2}})
      m.Initializer(name, {kOut}, v);
    m.Initializer("lo", {}, {0.f});
    m.Initializer("hi", {}, {6.f});
    auto* conv1 = m.Node("Conv", "conv1", {"x", "w1"}, {"c1"});
    testing::OnnxBuilder::Ints(conv1, "kernel_shape", {3, 3});
    testing::OnnxBuilder::Ints(conv1, "pads", {1, 1, 1, 1});
    m.Node("BatchNormalization", "bn1", {"c1", "g1", "b1", "m1", "v1"}, {"n1"});
    m.Node("Clip", "relu6", {"n1", "lo", "hi"}, {"a1"});
    auto* conv2 = m.Node("Conv", "conv2", {"a1", "w2"}, {"c2"});
    testing::OnnxBuilder::Ints(conv2, "kernel_shape", {1, 1});
    m.Node("BatchNormalization", "bn2", {"c2", "g2", "b2", "m2", "v2"}, {"n2"});
    m.Node("Relu", "relu", {"n2"}, {"y"});
    onnx = m.Bytes();
  }

  // BN input of each layer and the output, in float64, plain NCHW.
  struct Values {
    std::vector<double> c1, c2, y;
  };
  Values Ref(const std::vector<float>& x, int n) const {
    const int plane = kH * kW;
    Values r;
    r.c1.assign(static_cast<size_t>(n) * kMid * plane, 0.0);
    for (int s = 0; s < n; ++s)
      for (int o = 0; o < kMid; ++o)
        for (int h = 0; h < kH; ++h)
          for (int w = 0; w < kW; ++w) {
            double acc = 0;
            for (int i = 0; i < kIn; ++i)
              for (int kh = 0; kh < 3; ++kh)
                for (int kw = 0; kw < 3; ++kw) {
                  const int ih = h - 1 + kh, iw = w - 1 + kw;
                  if (ih < 0 || iw < 0 || ih >= kH || iw >= kW) continue;
                  acc += static_cast<double>(w1[((o * kIn + i) * 3 + kh) * 3 + kw]) *
                         x[((static_cast<size_t>(s) * kIn + i) * kH + ih) * kW + iw];
                }
            r.c1[(static_cast<size_t>(s) * kMid + o) * plane + h * kW + w] = acc;
          }
    auto bn = [](double v, float g, float b, float m, float var) {
      return (v - m) / std::sqrt(static_cast<double>(var) + 1e-5) * g + b;
    };
    std::vector<double> a1(r.c1.size());
    for (size_t i = 0; i < a1.size(); ++i) {
      const int c = static_cast<int>(i / plane) % kMid;
      a1[i] = std::min(6.0, std::max(0.0, bn(r.c1[i], g1[c], b1[c], m1[c], v1[c])));
    }
    r.c2.assign(static_cast<size_t>(n) * kOut * plane, 0.0);
    r.y.resize(r.c2.size());
    for (int s = 0; s < n; ++s)
      for (int o = 0; o < kOut; ++o)
        for (int p = 0; p < plane; ++p) {
          double acc = 0;
          for (int i = 0; i < kMid; ++i)
            acc += static_cast<double>(w2[o * kMid + i]) *
                   a1[(static_cast<size_t>(s) * kMid + i) * plane + p];
          const size_t at = (static_cast<size_t>(s) * kOut + o) * plane + p;
          r.c2[at] = acc;
          r.y[at] = std::max(0.0, bn(acc, g2[o], b2[o], m2[o], v2[o]));
        }
    return r;
  }
};

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
