// Parity against PyTorch eval mode: every exported test model, batch 1 and batch 3, must
// match PyTorch's outputs within 1e-4 relative to the output scale.
#include <cmath>
#include <cstdlib>
#include <string>

#include "gtest/gtest.h"
#include "kernels/engine.h"
#include "kernels/model.h"
#include "kernels/npy_io.h"

namespace normserve {
namespace {

std::string TestDataDir() {
  const char* dir = std::getenv("NORMSERVE_TESTDATA");
  return dir ? dir : "testdata";
}

// max |a-b| / max(std(b), max|b| * 1e-3): relative to the output scale.
double RelativeError(const Tensor& got, const Tensor& want) {
  double max_abs = 0, mean = 0, var = 0, max_err = 0;
  for (float v : want.data) mean += v;
  mean /= want.data.size();
  for (size_t i = 0; i < want.data.size(); ++i) {
    max_abs = std::max(max_abs, std::fabs(static_cast<double>(want.data[i])));
    var += (want.data[i] - mean) * (want.data[i] - mean);
    max_err = std::max(max_err, std::fabs(static_cast<double>(got.data[i]) - want.data[i]));
  }
  const double scale = std::max(std::sqrt(var / want.data.size()), max_abs * 1e-3);
  return max_err / scale;
}

class ParityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ParityTest, MatchesPyTorchAtBatch1And3) {
  const std::string dir = TestDataDir() + "/" + GetParam();
  auto model = Model::LoadFile(dir + "/model.onnx");
  ASSERT_TRUE(model.ok()) << model.status();
  CompileOptions options;
  options.intra_op_threads = 2;
  auto compiled = CompiledModel::Compile(*model, options);
  ASSERT_TRUE(compiled.ok()) << compiled.status();
  auto ctx = (*compiled)->NewContext();
  for (const char* batch : {"b1", "b3"}) {
    SCOPED_TRACE(batch);
    auto input = ReadNpyFile(dir + "/input_" + batch + ".npy");
    auto want = ReadNpyFile(dir + "/output_" + batch + ".npy");
    ASSERT_TRUE(input.ok()) << input.status();
    ASSERT_TRUE(want.ok()) << want.status();
    std::vector<Tensor> out;
    TensorView view{input->data.data(), input->shape};
    ASSERT_TRUE(ctx->Run({view}, &out).ok());
    ASSERT_EQ(out.size(), 1u);
    ASSERT_EQ(out[0].shape, want->shape);
    EXPECT_LT(RelativeError(out[0], *want), 1e-4) << (*compiled)->DescribePlan();
  }
}

INSTANTIATE_TEST_SUITE_P(Models, ParityTest,
                         ::testing::Values("resnet18", "resnet50", "mobilenet_v2", "gn_resnet",
                                           "instnorm_net", "layernorm_net", "layernorm_net_op13",
                                           "bn1d_head", "concat_net"));

}  // namespace
}  // namespace normserve
