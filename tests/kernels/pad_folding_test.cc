// Folding a zero Pad into the next Conv / AveragePool: which Pads fold, and the folded
// plan equals the unfolded one (the same graph with an Identity between Pad and op,
// which the pass leaves alone, so the Pad runs as its own kernel).
#include "kernels/pad_folding.h"

#include <cmath>
#include <cstdlib>
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

void IntInitializer(OnnxBuilder& b, const std::string& name, const std::vector<int64_t>& v) {
  auto* t = b.proto().mutable_graph()->add_initializer();
  t->set_name(name);
  t->set_data_type(onnx::TensorProto::INT64);
  t->add_dims(static_cast<int64_t>(v.size()));
  for (int64_t x : v) t->add_int64_data(x);
}

struct Variant {
  bool block = false;  // Identity between each Pad and its consumer
  std::string mode = "constant";
  float value = 0.f;
  int64_t channel_pad = 0;  // pads C too
  std::string pool = "AveragePool";
  int64_t ceil_mode = 0;
  bool second_use = false;  // the conv's Pad output is also a graph output
};

// x [N,4,9,8] -> Pad(1,2 | 0,1) -> Conv 3x3 pads (1,0,0,1), bias -> a
// x -> Pad(1,1 | 1,1) -> pool 3x3 stride 2 -> b
std::string Model(const Variant& v) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 4, 9, 8});
  b.Output("a", {-1, -1, -1, -1});
  b.Output("b", {-1, -1, -1, -1});
  if (v.second_use) b.Output("xp", {-1, -1, -1, -1});
  std::mt19937 rng(11);
  const int64_t cin = 4 + 2 * v.channel_pad;
  b.Initializer("w", {5, cin, 3, 3}, testing::RandomVector(5 * cin * 9, &rng));
  b.Initializer("bias", {5}, testing::RandomVector(5, &rng));
  b.Initializer("value", {}, {v.value});
  IntInitializer(b, "pads_conv", {0, v.channel_pad, 1, 2, 0, v.channel_pad, 0, 1});
  IntInitializer(b, "pads_pool", {0, 0, 1, 1, 0, 0, 1, 1});
  auto pad = [&](const std::string& name, const std::string& pads, const std::string& out) {
    auto* n = b.Node("Pad", name, {"x", pads, "value"}, {out});
    auto* a = n->add_attribute();
    a->set_name("mode");
    a->set_type(onnx::AttributeProto::STRING);
    a->set_s(v.mode);
  };
  pad("pad_conv", "pads_conv", "xp");
  pad("pad_pool", "pads_pool", "xq");
  std::string conv_in = "xp", pool_in = "xq";
  if (v.block) {
    b.Node("Identity", "keep_conv_pad", {"xp"}, {"xp_id"});
    b.Node("Identity", "keep_pool_pad", {"xq"}, {"xq_id"});
    conv_in = "xp_id";
    pool_in = "xq_id";
  }
  auto* conv = b.Node("Conv", "conv", {conv_in, "w", "bias"}, {"a"});
  OnnxBuilder::Ints(conv, "kernel_shape", {3, 3});
  OnnxBuilder::Ints(conv, "pads", {1, 0, 0, 1});
  auto* pool = b.Node(v.pool, "pool", {pool_in}, {"b"});
  OnnxBuilder::Ints(pool, "kernel_shape", {3, 3});
  OnnxBuilder::Ints(pool, "strides", {2, 2});
  OnnxBuilder::Int(pool, "ceil_mode", v.ceil_mode);
  return b.Bytes();
}

// Pads folded by the pass on the model of `v` at batch 2.
int Folded(const Variant& v) {
  auto m = Model::LoadBytes(Model(v));
  EXPECT_TRUE(m.ok()) << m.status();
  if (!m.ok()) return -1;
  auto g = Specialize((*m)->graph(), InputShapesFor((*m)->graph(), 2));
  EXPECT_TRUE(g.ok()) << g.status();
  return g.ok() ? FoldZeroPads(&*g) : -1;
}

TEST(PadFolding, OnlyZeroSpatialPadsIntoConvAndCountingAveragePoolFold) {
  EXPECT_EQ(Folded({}), 2);
  EXPECT_EQ(Folded({.block = true}), 0);
  EXPECT_EQ(Folded({.mode = "reflect"}), 0);
  EXPECT_EQ(Folded({.mode = "edge"}), 0);
  EXPECT_EQ(Folded({.value = 1.f}), 0);
  EXPECT_EQ(Folded({.channel_pad = 1}), 1);   // the pool's Pad still folds
  EXPECT_EQ(Folded({.pool = "MaxPool"}), 1);  // max pooling pads with -inf, not 0
  EXPECT_EQ(Folded({.ceil_mode = 1}), 1);     // a ceil-mode window past the end counts fewer
  EXPECT_EQ(Folded({.second_use = true}), 1);
}

TEST(PadFolding, FoldedEqualsUnfoldedAtTwoBatchSizes) {
  {
    const Variant base;
    Variant blocked = base;
    blocked.block = true;
    auto folded_m = Model::LoadBytes(Model(base));
    auto unfolded_m = Model::LoadBytes(Model(blocked));
    ASSERT_TRUE(folded_m.ok() && unfolded_m.ok());
    auto folded = CompiledModel::Compile(*folded_m);
    auto unfolded = CompiledModel::Compile(*unfolded_m);
    ASSERT_TRUE(folded.ok()) << folded.status();
    ASSERT_TRUE(unfolded.ok()) << unfolded.status();
    EXPECT_EQ((*folded)->DescribePlan().find("pad pad_"), std::string::npos)
        << (*folded)->DescribePlan();
    EXPECT_NE((*unfolded)->DescribePlan().find("pad pad_conv"), std::string::npos)
        << (*unfolded)->DescribePlan();
    EXPECT_NE((*unfolded)->DescribePlan().find("pad pad_pool"), std::string::npos)
        << (*unfolded)->DescribePlan();
    for (int64_t batch : {1, 3}) {
      std::mt19937 rng(static_cast<unsigned>(batch));
      const std::vector<float> x = testing::RandomVector(batch * 4 * 9 * 8, &rng);
      std::vector<Tensor> got, want;
      ASSERT_TRUE(
          (*folded)->NewContext()->Run({TensorView{x.data(), {batch, 4, 9, 8}}}, &got).ok());
      ASSERT_TRUE(
          (*unfolded)->NewContext()->Run({TensorView{x.data(), {batch, 4, 9, 8}}}, &want).ok());
      ASSERT_EQ(got.size(), 2u);
      for (size_t k = 0; k < 2; ++k) {
        ASSERT_EQ(got[k].shape, want[k].shape);
        double err = 0, scale = 0;
        for (size_t i = 0; i < want[k].data.size(); ++i) {
          err = std::max(err, std::fabs(static_cast<double>(got[k].data[i]) - want[k].data[i]));
          scale = std::max(scale, std::fabs(static_cast<double>(want[k].data[i])));
        }
        EXPECT_LT(err, 1e-5 * scale) << "output " << k << " batch " << batch;
      }
    }
  }
}

// torchvision's DenseNet transitions are avg_pool2d(count_include_pad=True), exported as
// a zero Pad + AveragePool: every one of them folds.
TEST(PadFolding, EveryPadOfTheExportedDenseNetFolds) {
  const char* dir = std::getenv("NORMSERVE_TESTDATA");
  auto m = Model::LoadFile(std::string(dir ? dir : "testdata") + "/densenet121/model.onnx");
  ASSERT_TRUE(m.ok()) << m.status();
  int pads = 0;
  for (const Node& n : (*m)->graph().nodes) pads += n.op == "Pad";
  ASSERT_GT(pads, 0);
  auto g = Specialize((*m)->graph(), InputShapesFor((*m)->graph(), 1));
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(FoldZeroPads(&*g), pads);
  for (const Node& n : g->nodes) EXPECT_NE(n.op, "Pad") << n.name;
}

}  // namespace
}  // namespace normserve
