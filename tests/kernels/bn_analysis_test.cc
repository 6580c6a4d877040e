// Shape-aware BN analysis on the exported test models: a BatchNorm1d on a 1 x C
// activation is undefined from one request, conv BNs are classified by H*W.
#include "kernels/bn_analysis.h"

#include <cstdlib>

#include "gtest/gtest.h"
#include "kernels/model.h"
#include "tests/kernels/conv_bn_fixture.h"

namespace normserve {
namespace {

std::string TestData(const std::string& name) {
  const char* dir = std::getenv("NORMSERVE_TESTDATA");
  return std::string(dir ? dir : "testdata") + "/" + name + "/model.onnx";
}

TEST(BnAnalysis, Classification) {
  EXPECT_EQ(ClassifyValuesPerChannel(1, 16), BnReliability::kUndefined);
  EXPECT_EQ(ClassifyValuesPerChannel(4, 16), BnReliability::kUnreliable);
  EXPECT_EQ(ClassifyValuesPerChannel(16, 16), BnReliability::kFine);
}

TEST(BnAnalysis, FixtureConvBnHas25ValuesPerChannel) {
  testing::ConvBnFixture f;
  auto m = Model::LoadBytes(f.onnx);
  ASSERT_TRUE(m.ok());
  ASSERT_EQ((*m)->bn_layers().size(), 1u);
  const BnLayerInfo& l = (*m)->bn_layers()[0];
  EXPECT_EQ(l.name, "bn");
  EXPECT_EQ(l.channels, 8);
  EXPECT_EQ(l.values_per_channel, 25);
  EXPECT_EQ(l.input_shape, (std::vector<int64_t>{1, 8, 5, 5}));
  EXPECT_EQ(l.reliability, BnReliability::kFine);
}

TEST(BnAnalysis, DenseHeadBatchNorm1dIsUndefined) {
  auto m = Model::LoadFile(TestData("bn1d_head"));
  ASSERT_TRUE(m.ok()) << m.status();
  int undefined = 0, fine = 0;
  for (const auto& l : (*m)->bn_layers()) {
    if (l.input_shape.size() == 2) {
      EXPECT_EQ(l.values_per_channel, 1) << l.name;
      EXPECT_EQ(l.reliability, BnReliability::kUndefined) << l.name;
      ++undefined;
    } else {
      EXPECT_EQ(l.reliability, BnReliability::kFine) << l.name;
      ++fine;
    }
  }
  EXPECT_EQ(undefined, 1);
  EXPECT_GE(fine, 1);
}

TEST(BnAnalysis, ResNet50LayersInTopologicalOrderWithSpatialCounts) {
  auto m = Model::LoadFile(TestData("resnet50"));
  ASSERT_TRUE(m.ok()) << m.status();
  const auto& layers = (*m)->bn_layers();
  ASSERT_EQ(layers.size(), 53u);
  EXPECT_EQ(layers.front().values_per_channel, 112 * 112);
  EXPECT_EQ(layers.back().values_per_channel, 7 * 7);
  for (size_t i = 0; i < layers.size(); ++i) EXPECT_EQ(layers[i].topo_index, static_cast<int>(i));
  LoadOptions strict;
  strict.reliable_values_per_channel = 64;  // 7x7 = 49 < 64: the last stage becomes unreliable
  auto m2 = Model::LoadFile(TestData("resnet50"), strict);
  ASSERT_TRUE(m2.ok());
  EXPECT_EQ((*m2)->bn_layers().back().reliability, BnReliability::kUnreliable);
}

}  // namespace
}  // namespace normserve
