// Parity against PyTorch eval mode: every exported test model, batch 1 and batch 3, must
// match PyTorch's outputs within 1e-4 relative to the output scale; models exported with
// dynamic H/W also at their second input size (input_hw2_b*.npy), on the same compiled model.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <tuple>

#include "absl/strings/match.h"
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

// Both ends of the convolution algorithm choice (kAuto picks per layer between them).
class ParityTest : public ::testing::TestWithParam<std::tuple<std::string, ConvAlgorithm>> {};

TEST_P(ParityTest, MatchesPyTorchAtBatch1And3) {
  const auto& [name, algorithm] = GetParam();
  const std::string dir = TestDataDir() + "/" + name;
  auto model = Model::LoadFile(dir + "/model.onnx");
  ASSERT_TRUE(model.ok()) << model.status();
  CompileOptions options;
  options.intra_op_threads = 2;
  options.conv_algorithm = algorithm;
  auto compiled = CompiledModel::Compile(*model, options);
  ASSERT_TRUE(compiled.ok()) << compiled.status();
  const bool resnet = name.rfind("resnet", 0) == 0;
  if (resnet) {
    // ResNets have 3x3 stride-1 convolutions: the algorithm asked for must be the one run.
    EXPECT_EQ(absl::StrContains((*compiled)->DescribePlan(), "wino"),
              algorithm == ConvAlgorithm::kWinograd)
        << (*compiled)->DescribePlan();
  }
  auto ctx = (*compiled)->NewContext();
  for (const char* batch : {"b1", "b3", "hw2_b1", "hw2_b3"}) {
    SCOPED_TRACE(batch);
    const bool second_size = absl::StartsWith(batch, "hw2");
    if (second_size && !std::ifstream(dir + "/input_" + batch + ".npy").good()) continue;
    auto input = ReadNpyFile(dir + "/input_" + batch + ".npy");
    auto want = ReadNpyFile(dir + "/output_" + batch + ".npy");
    ASSERT_TRUE(input.ok()) << input.status();
    ASSERT_TRUE(want.ok()) << want.status();
    std::vector<Tensor> out;
    TensorView view{input->data.data(), input->shape};
    ASSERT_TRUE(ctx->Run({view}, &out).ok());
    ASSERT_EQ(out.size(), 1u);
    ASSERT_EQ(out[0].shape, want->shape);
    const double err = RelativeError(out[0], *want);
    EXPECT_LT(err, 1e-4) << (*compiled)->DescribePlan();
    std::printf("%s %s %s: error %.3g of the output scale\n", name.c_str(), batch,
                algorithm == ConvAlgorithm::kWinograd ? "winograd" : "direct", err);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Models, ParityTest,
    ::testing::Combine(::testing::Values("resnet18", "resnet50", "mobilenet_v2", "gn_resnet",
                                         "instnorm_net", "layernorm_net", "layernorm_net_op13",
                                         "bn1d_head", "concat_net", "resize_nearest_up",
                                         "resize_nearest_size", "resize_bilinear_up",
                                         "resize_bilinear_down", "resize_bilinear_corners",
                                         "resize_bilinear_to_input", "resize_bilinear_corners_up",
                                         "upsample_nearest_op9", "seg_head", "gelu_mlp",
                                         "gelu_mlp_op13", "gelu_tanh_mlp", "convnext_block",
                                         "convnext_block_op13", "minmax_reduce_net", "pad_net",
                                         "pad_net_op10", "slice_net", "slice_net_op11",
                                         "densenet121", "shufflenet_v2"),
                       ::testing::Values(ConvAlgorithm::kDirect, ConvAlgorithm::kWinograd)));

}  // namespace
}  // namespace normserve
