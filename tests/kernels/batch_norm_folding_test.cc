// Folded conv+BN equals conv then BN: against a float64 reference, folded and unfolded.
#include "kernels/batch_norm_folding.h"

#include <random>

#include "gtest/gtest.h"
#include "kernels/engine.h"
#include "kernels/specialize.h"
#include "tests/kernels/conv_bn_clip_chain.h"
#include "tests/kernels/conv_bn_fixture.h"
#include "tests/kernels/onnx_builder.h"

namespace normserve {
namespace {

using testing::ConvBnFixture;
using testing::RandomVector;

double MaxAbsDiff(const std::vector<float>& got, const std::vector<double>& want) {
  double e = 0;
  for (size_t i = 0; i < want.size(); ++i) e = std::max(e, std::fabs(got[i] - want[i]));
  return e;
}

TEST(FoldBatchNormIntoWeights, MatchesFloat64Formula) {
  std::mt19937 rng(1);
  BnParams bn;
  bn.scale = RandomVector(4, &rng, 0.5f, 1.5f);
  bn.bias = RandomVector(4, &rng);
  bn.mean = RandomVector(4, &rng);
  bn.var = RandomVector(4, &rng, 0.1f, 3.f);
  bn.epsilon = 1e-3f;
  std::vector<float> w = RandomVector(4 * 6, &rng), b = RandomVector(4, &rng);
  const std::vector<float> w0 = w, b0 = b;
  FoldBatchNormIntoWeights(bn, &w, &b);
  for (int o = 0; o < 4; ++o) {
    const double s = bn.scale[o] / std::sqrt(static_cast<double>(bn.var[o]) + bn.epsilon);
    for (int k = 0; k < 6; ++k) EXPECT_NEAR(w[o * 6 + k], w0[o * 6 + k] * s, 1e-6);
    EXPECT_NEAR(b[o], (b0[o] - bn.mean[o]) * s + bn.bias[o], 1e-6);
  }
}

class ConvBnTest : public ::testing::TestWithParam<bool> {};

TEST_P(ConvBnTest, FoldedAndUnfoldedMatchReference) {
  const bool fold = GetParam();
  ConvBnFixture f;
  auto model = Model::LoadBytes(f.onnx);
  ASSERT_TRUE(model.ok()) << model.status();
  CompileOptions options;
  options.fold_batch_norm = fold;
  options.fuse_post_ops = fold;
  auto compiled = CompiledModel::Compile(*model, options);
  ASSERT_TRUE(compiled.ok()) << compiled.status();
  const std::string plan = (*compiled)->DescribePlan();
  // The plan really is what the parameter says: BN gone and Relu fused, or both present.
  EXPECT_EQ(plan.find("batch_norm") == std::string::npos, fold) << plan;
  EXPECT_EQ(plan.find("+eltwise_relu") != std::string::npos, fold) << plan;
  std::mt19937 rng(3);
  const int n = 2;
  std::vector<float> x = RandomVector(n * 3 * 9 * 9, &rng, -2.f, 2.f);
  std::vector<Tensor> out;
  ASSERT_TRUE((*compiled)->NewContext()->Run({TensorView{x.data(), {n, 3, 9, 9}}}, &out).ok());
  EXPECT_LT(MaxAbsDiff(out[0].data, f.Ref(x, n)), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(FoldOrNot, ConvBnTest, ::testing::Bool());

// A BN followed by a Clip (ReLU6) absorbs it (post_op_fusion.h); left unfolded, its
// lowering must still clip, as an eltwise after the batch_norm primitive.
TEST_P(ConvBnTest, BatchNormWithRelu6FoldedAndUnfoldedMatchReference) {
  const bool fold = GetParam();
  testing::ConvBnClipChain f;
  auto model = Model::LoadBytes(f.onnx);
  ASSERT_TRUE(model.ok()) << model.status();
  CompileOptions options;
  options.fold_batch_norm = fold;
  auto compiled = CompiledModel::Compile(*model, options);
  ASSERT_TRUE(compiled.ok()) << compiled.status();
  const std::string plan = (*compiled)->DescribePlan();
  EXPECT_EQ(plan.find("batch_norm bn1") == std::string::npos, fold) << plan;
  EXPECT_EQ(plan.find("eltwise bn1 eltwise_clip") != std::string::npos, !fold) << plan;
  std::mt19937 rng(4);
  const int n = 2;
  std::vector<float> x = RandomVector(n * 3 * 12 * 12, &rng, -2.f, 2.f);
  std::vector<Tensor> out;
  ASSERT_TRUE((*compiled)->NewContext()->Run({TensorView{x.data(), {n, 3, 12, 12}}}, &out).ok());
  EXPECT_LT(MaxAbsDiff(out[0].data, f.Ref(x, n).y), 1e-4);
}

TEST(FoldBatchNorms, GemmThenBatchNorm1dFoldsWithTransposedWeights) {
  // Linear(5 -> 4) exported as Gemm(transB=0) then BatchNorm1d on a [N, 4] activation.
  std::mt19937 rng(5);
  const auto w = RandomVector(5 * 4, &rng), c = RandomVector(4, &rng);
  const auto gamma = RandomVector(4, &rng, 0.5f, 1.5f), beta = RandomVector(4, &rng);
  const auto mean = RandomVector(4, &rng), var = RandomVector(4, &rng, 0.5f, 2.f);
  testing::OnnxBuilder m;
  m.Input("x", {-1, 5});
  m.Output("y", {-1, 4});
  m.Initializer("w", {5, 4}, w);
  m.Initializer("c", {4}, c);
  for (auto [name, v] : {std::pair{"g", &gamma}, {"b", &beta}, {"m", &mean}, {"v", &var}})
    m.Initializer(name, {4}, *v);
  auto* gemm = m.Node("Gemm", "fc", {"x", "w", "c"}, {"h"});
  testing::OnnxBuilder::Float(gemm, "alpha", 0.5f);
  m.Node("BatchNormalization", "bn1d", {"h", "g", "b", "m", "v"}, {"y"});
  auto model = Model::LoadBytes(m.Bytes());
  ASSERT_TRUE(model.ok()) << model.status();
  auto compiled = CompiledModel::Compile(*model);
  ASSERT_TRUE(compiled.ok()) << compiled.status();
  EXPECT_EQ((*compiled)->DescribePlan().find("batch_norm"), std::string::npos);
  const auto x = RandomVector(3 * 5, &rng);
  std::vector<Tensor> out;
  ASSERT_TRUE((*compiled)->NewContext()->Run({TensorView{x.data(), {3, 5}}}, &out).ok());
  for (int s = 0; s < 3; ++s) {
    for (int o = 0; o < 4; ++o) {
      double h = c[o];
      for (int k = 0; k < 5; ++k) h += 0.5 * x[s * 5 + k] * w[k * 4 + o];
      const double want = (h - mean[o]) / std::sqrt(var[o] + 1e-5) * gamma[o] + beta[o];
      EXPECT_NEAR(out[0].data[s * 4 + o], want, 1e-5);
    }
  }
}

// A QDQ file's int8 convolution (qdq_import.h) keeps its weights as integers q times
// per-channel scales s, and ops/conv.cc recovers q as w / s. Folding a BN after it (a QDQ
// file whose BN was left unfolded, e.g. ConvInteger -> DequantizeLinear -> BN) must keep
// that exact: w' / s' = q * sign(k) with k = g / sqrt(var + eps), also for |k| > 1, where
// stale scales would give integers beyond 127. (fashion_bn_resnet served int8 lost 10
// accuracy points on its two downsampling shortcuts before.)
TEST(FoldBatchNorms, Int8ConvolutionKeepsItsIntegerWeightsWithRescaledScales) {
  const int64_t out = 4, per = 2 * 3 * 3;
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> level(-127, 127);
  std::vector<int> q(out * per);
  for (int& v : q) v = level(rng);
  q[0] = 127;  // a full-range weight in channel 0, whose |k| is 3
  const std::vector<float> scales = {0.01f, 0.02f, 0.005f, 0.03f};
  const std::vector<float> gamma = {3.f, -2.f, 0.25f, 1.f}, var = {1.f, 0.5f, 2.f, 4.f};
  SpecializedGraph g;
  g.inputs = {ValueSpec{"x", ElementType::kFloat32, {1, 2, 5, 5}}};
  g.outputs = {ValueSpec{"y", ElementType::kFloat32, {1, out, 5, 5}}};
  ConstTensor w;
  w.shape = {out, 2, 3, 3};
  for (int64_t i = 0; i < out * per; ++i) w.floats.push_back(q[i] * scales[i / per]);
  g.consts["w"] = w;
  for (auto [name, v] : {std::pair{"g", gamma},
                         {"b", {0.1f, 0.2f, 0.3f, 0.4f}},
                         {"m", {0.f, 1.f, -1.f, 2.f}},
                         {"v", var}}) {
    ConstTensor t;
    t.shape = {out};
    t.floats = v;
    g.consts[name] = t;
  }
  Node conv;
  conv.name = "conv";
  conv.op = "Conv";
  conv.inputs = {"x", "w"};
  conv.outputs = {"h"};
  conv.attrs["pads"].kind = Attribute::Kind::kInts;
  conv.attrs["pads"].ints = {1, 1, 1, 1};
  conv.attrs["int8_weight_scales"].kind = Attribute::Kind::kFloats;
  conv.attrs["int8_weight_scales"].floats = scales;
  conv.attrs["int8_src_scale"].kind = Attribute::Kind::kFloat;
  conv.attrs["int8_src_scale"].f = 0.02f;
  Node bn;
  bn.name = "bn";
  bn.op = "BatchNormalization";
  bn.inputs = {"h", "g", "b", "m", "v"};
  bn.outputs = {"y"};
  g.nodes = {conv, bn};
  g.shapes["x"] = {1, 2, 5, 5};
  g.shapes["h"] = g.shapes["y"] = {1, out, 5, 5};

  ASSERT_TRUE(FoldBatchNorms(&g, {}).ok());
  ASSERT_EQ(g.nodes.size(), 1u);
  const Node& folded = g.nodes[0];
  const std::vector<float>& folded_scales = folded.attrs.at("int8_weight_scales").floats;
  const std::vector<float>& folded_w = g.consts.at(folded.inputs[1]).floats;
  for (int64_t o = 0; o < out; ++o) {
    const double k = gamma[o] / std::sqrt(static_cast<double>(var[o]) + 1e-5);
    EXPECT_NEAR(folded_scales[o], scales[o] * std::fabs(k), 1e-6 * scales[o] * std::fabs(k));
    for (int64_t i = 0; i < per; ++i) {
      const double integer = folded_w[o * per + i] / folded_scales[o];
      EXPECT_NEAR(integer, k < 0 ? -q[o * per + i] : q[o * per + i], 1e-3) << o << " " << i;
    }
  }
  EXPECT_FLOAT_EQ(folded.FloatAttr("int8_src_scale", 0), 0.02f);
}

}  // namespace
}  // namespace normserve
