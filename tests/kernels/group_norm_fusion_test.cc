// PyTorch's GroupNorm export chain is recognised and run as one group normalization, and
// the fused plan equals the unfused one.
#include "kernels/group_norm_fusion.h"

#include <cstdlib>

#include "gtest/gtest.h"
#include "kernels/engine.h"
#include "kernels/npy_io.h"
#include "kernels/specialize.h"

namespace normserve {
namespace {

std::string TestData(const std::string& name) {
  const char* dir = std::getenv("NORMSERVE_TESTDATA");
  return std::string(dir ? dir : "testdata") + "/" + name;
}

TEST(GroupNormFusion, EveryExportedChainIsFused) {
  auto m = Model::LoadFile(TestData("gn_resnet") + "/model.onnx");
  ASSERT_TRUE(m.ok()) << m.status();
  int instance_norms = 0;
  for (const auto& n : (*m)->graph().nodes) instance_norms += n.op == "InstanceNormalization";
  ASSERT_GT(instance_norms, 0);
  auto g = Specialize((*m)->graph(), InputShapesFor((*m)->graph(), 1));
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(FuseGroupNorms(&*g), instance_norms);
  for (const auto& n : g->nodes) {
    EXPECT_NE(n.op, "InstanceNormalization");
    EXPECT_NE(n.op, "Reshape");
  }
}

TEST(GroupNormFusion, FusedEqualsUnfusedAndPyTorch) {
  auto m = Model::LoadFile(TestData("gn_resnet") + "/model.onnx");
  ASSERT_TRUE(m.ok());
  auto input = ReadNpyFile(TestData("gn_resnet") + "/input_b1.npy");
  auto want = ReadNpyFile(TestData("gn_resnet") + "/output_b1.npy");
  ASSERT_TRUE(input.ok() && want.ok());
  auto fused = CompiledModel::Compile(*m);
  ASSERT_TRUE(fused.ok()) << fused.status();
  EXPECT_NE((*fused)->DescribePlan().find("group_norm"), std::string::npos);
  std::vector<Tensor> out;
  ASSERT_TRUE(
      (*fused)->NewContext()->Run({TensorView{input->data.data(), input->shape}}, &out).ok());
  double err = 0, scale = 0;
  for (size_t i = 0; i < want->data.size(); ++i) {
    err = std::max(err, static_cast<double>(std::fabs(out[0].data[i] - want->data[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(want->data[i])));
  }
  EXPECT_LT(err, 1e-4 * scale);
}

}  // namespace
}  // namespace normserve
