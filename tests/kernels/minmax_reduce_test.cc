// n-ary broadcasting Min/Max, Neg, Reciprocal and ReduceMax/ReduceSum/ReduceL2 against a
// float64 reference computed here, and the errors of the variants the engine refuses.
// (PyTorch parity of the exported forms: minmax_reduce_net in parity_test.)
#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/engine.h"
#include "kernels/model.h"
#include "tests/kernels/onnx_builder.h"

namespace normserve {
namespace {

using testing::OnnxBuilder;

constexpr int64_t kN = 2, kC = 4, kH = 3, kW = 5;

std::vector<float> Input() {
  std::mt19937 rng(11);
  return testing::RandomVector(kN * kC * kH * kW, &rng, -2.f, 2.f);
}
size_t At(int64_t n, int64_t c, int64_t h, int64_t w) { return ((n * kC + c) * kH + h) * kW + w; }

// Runs the first `batch` samples of x.
absl::StatusOr<std::vector<float>> RunModel(const OnnxBuilder& b, const std::vector<float>& x,
                                            int64_t batch = kN) {
  auto m = Model::LoadBytes(b.Bytes());
  if (!m.ok()) return m.status();
  auto c = CompiledModel::Compile(*m);
  if (!c.ok()) return c.status();
  std::vector<Tensor> out;
  absl::Status s = (*c)->NewContext()->Run({TensorView{x.data(), {batch, kC, kH, kW}}}, &out);
  if (!s.ok()) return s;
  return out[0].data;
}

OnnxBuilder Builder(int opset, std::vector<int64_t> out_shape) {
  OnnxBuilder b(opset);
  b.Input("x", {-1, kC, kH, kW});
  b.Output("y", std::move(out_shape));
  return b;
}

TEST(MinMax, ThreeOperandsWithRuntimeAndConstantBroadcasting) {
  for (const std::string op : {"Max", "Min"}) {
    SCOPED_TRACE(op);
    OnnxBuilder b = Builder(13, {-1, kC, kH, kW});
    b.Initializer("bias", {kC, 1, 1}, {-0.5f, 0.f, 0.25f, 1.f});
    // The full-size operand comes last: the lowering must pick it as the accumulator.
    auto* mean = b.Node("ReduceMean", "mean", {"x"}, {"m"});
    OnnxBuilder::Ints(mean, "axes", {1});
    b.Node(op, "minmax", {"m", "bias", "x"}, {"y"});
    const auto x = Input();
    auto y = RunModel(b, x);
    ASSERT_TRUE(y.ok()) << y.status();
    for (int64_t n = 0; n < kN; ++n) {
      for (int64_t c = 0; c < kC; ++c) {
        for (int64_t h = 0; h < kH; ++h) {
          for (int64_t w = 0; w < kW; ++w) {
            double m = 0;
            for (int64_t k = 0; k < kC; ++k) m += x[At(n, k, h, w)] / kC;
            const double bias[] = {-0.5, 0, 0.25, 1};
            const double v = x[At(n, c, h, w)];
            const double want = op == "Max" ? std::max({m, bias[c], v}) : std::min({m, bias[c], v});
            EXPECT_NEAR((*y)[At(n, c, h, w)], want, 1e-6);
          }
        }
      }
    }
  }
}

// The accumulator is a convolution's output (in whatever layout it chose, blocked on
// AVX-512 machines), combined with a per-channel constant and a per-pixel runtime value.
TEST(MinMax, ThreeOperandsAfterAConvolution) {
  constexpr int64_t kK = 16;
  std::mt19937 rng(5);
  const auto w = testing::RandomVector(kK * kC, &rng);
  const auto bias = testing::RandomVector(kK, &rng);
  const auto floor = testing::RandomVector(kK, &rng);
  OnnxBuilder b = Builder(13, {-1, kK, kH, kW});
  b.Initializer("w", {kK, kC, 1, 1}, w);
  b.Initializer("b", {kK}, bias);
  b.Initializer("floor", {kK, 1, 1}, floor);
  b.Node("Conv", "conv", {"x", "w", "b"}, {"c"});
  auto* mean = b.Node("ReduceMean", "mean", {"c"}, {"m"});
  OnnxBuilder::Ints(mean, "axes", {1});
  b.Node("Max", "max", {"c", "floor", "m"}, {"y"});
  const auto x = Input();
  auto y = RunModel(b, x);
  ASSERT_TRUE(y.ok()) << y.status();
  ASSERT_EQ(y->size(), static_cast<size_t>(kN * kK * kH * kW));
  for (int64_t n = 0; n < kN; ++n) {
    for (int64_t h = 0; h < kH; ++h) {
      for (int64_t v = 0; v < kW; ++v) {
        std::vector<double> conv(kK);
        double m = 0;
        for (int64_t k = 0; k < kK; ++k) {
          conv[k] = bias[k];
          for (int64_t c = 0; c < kC; ++c) conv[k] += double{w[k * kC + c]} * x[At(n, c, h, v)];
          m += conv[k] / kK;
        }
        for (int64_t k = 0; k < kK; ++k) {
          EXPECT_NEAR((*y)[((n * kK + k) * kH + h) * kW + v],
                      std::max({conv[k], double{floor[k]}, m}), 1e-5);
        }
      }
    }
  }
}

TEST(MinMax, OneOperandIsIdentity) {
  OnnxBuilder b = Builder(13, {-1, kC, kH, kW});
  b.Node("Max", "max", {"x"}, {"y"});
  const auto x = Input();
  auto y = RunModel(b, x);
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_EQ(*y, x);
}

TEST(MinMax, NoOperandWithTheOutputShapeIsRefusedNamingTheNode) {
  OnnxBuilder b = Builder(13, {-1, kC, kH, kW});
  auto* over_c = b.Node("ReduceMean", "over_c", {"x"}, {"a"});
  OnnxBuilder::Ints(over_c, "axes", {1});
  auto* over_hw = b.Node("ReduceMean", "over_hw", {"x"}, {"b"});
  OnnxBuilder::Ints(over_hw, "axes", {2, 3});
  b.Node("Max", "max_7", {"a", "b"}, {"y"});
  auto y = RunModel(b, Input());
  ASSERT_FALSE(y.ok());
  EXPECT_NE(y.status().message().find("max_7"), std::string::npos) << y.status();
  EXPECT_NE(y.status().message().find("output shape [1,4,3,5]"), std::string::npos) << y.status();
}

TEST(NegReciprocal, MatchFloat64) {
  OnnxBuilder b = Builder(13, {-1, kC, kH, kW});
  b.Node("Neg", "neg", {"x"}, {"n"});
  b.Node("Reciprocal", "recip", {"n"}, {"y"});
  const auto x = Input();
  auto y = RunModel(b, x);
  ASSERT_TRUE(y.ok()) << y.status();
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_NEAR((*y)[i], -1.0 / x[i], 1e-6 * std::max(1.0, std::fabs(1.0 / x[i])));
  }
}

// keepdims 0 over H,W (attribute axes): [N, C].
TEST(Reduce, MaxSumL2OverSpatialMatchFloat64) {
  const auto x = Input();
  for (const std::string op : {"ReduceMax", "ReduceSum", "ReduceL2"}) {
    SCOPED_TRACE(op);
    // ReduceSum takes axes as an input from opset 13; the others as an attribute.
    OnnxBuilder b = Builder(13, {-1, kC});
    onnx::NodeProto* n;
    if (op == "ReduceSum") {
      auto* t = b.proto().mutable_graph()->add_initializer();
      t->set_name("axes");
      t->set_data_type(onnx::TensorProto::INT64);
      t->add_dims(2);
      t->add_int64_data(-2);
      t->add_int64_data(-1);
      n = b.Node(op, "reduce", {"x", "axes"}, {"y"});
    } else {
      n = b.Node(op, "reduce", {"x"}, {"y"});
      OnnxBuilder::Ints(n, "axes", {2, 3});
    }
    OnnxBuilder::Int(n, "keepdims", 0);
    auto y = RunModel(b, x);
    ASSERT_TRUE(y.ok()) << y.status();
    ASSERT_EQ(y->size(), static_cast<size_t>(kN * kC));
    for (int64_t i = 0; i < kN; ++i) {
      for (int64_t c = 0; c < kC; ++c) {
        double mx = -1e30, sum = 0, sq = 0;
        for (int64_t h = 0; h < kH; ++h) {
          for (int64_t w = 0; w < kW; ++w) {
            const double v = x[At(i, c, h, w)];
            mx = std::max(mx, v);
            sum += v;
            sq += v * v;
          }
        }
        const double want = op == "ReduceMax" ? mx : op == "ReduceSum" ? sum : std::sqrt(sq);
        EXPECT_NEAR((*y)[i * kC + c], want, 1e-5);
      }
    }
  }
}

TEST(Reduce, SumWithNoAxesAndNoopIsIdentityElseReducesAll) {
  const auto x = Input();
  {
    OnnxBuilder b = Builder(13, {-1, kC, kH, kW});
    auto* n = b.Node("ReduceSum", "sum", {"x"}, {"y"});
    OnnxBuilder::Int(n, "noop_with_empty_axes", 1);
    auto y = RunModel(b, x);
    ASSERT_TRUE(y.ok()) << y.status();
    EXPECT_EQ(*y, x);
  }
  // Every axis, the batch's too: one sample (a larger batch runs sample by sample).
  OnnxBuilder b = Builder(13, {1, 1, 1, 1});
  b.Node("ReduceSum", "sum", {"x"}, {"y"});
  auto y = RunModel(b, x, 1);
  ASSERT_TRUE(y.ok()) << y.status();
  double sum = 0;
  for (int64_t i = 0; i < kC * kH * kW; ++i) sum += x[i];
  ASSERT_EQ(y->size(), 1u);
  EXPECT_NEAR((*y)[0], sum, 1e-4);
}

TEST(Reduce, AxisOutOfRangeIsRefusedNamingNodeAndAxis) {
  OnnxBuilder b = Builder(13, {-1, kC, kH, 1});
  auto* n = b.Node("ReduceMax", "rmax_3", {"x"}, {"y"});
  OnnxBuilder::Ints(n, "axes", {4});
  auto y = RunModel(b, Input());
  ASSERT_FALSE(y.ok());
  EXPECT_NE(y.status().message().find("rmax_3"), std::string::npos) << y.status();
  EXPECT_NE(y.status().message().find("axis 4 out of range for rank 4"), std::string::npos)
      << y.status();
}

}  // namespace
}  // namespace normserve
