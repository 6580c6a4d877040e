// A segmentation model with dynamic H/W served by the real `normserve` binary over KServe
// v2 ModelInfer: two image sizes (the second compiled on first use) match PyTorch, and a
// side beyond config.json's max_dynamic_dim is INVALID_ARGUMENT naming the limit.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/npy_io.h"
#include "kserve/grpc_predict_v2.grpc.pb.h"
#include "server_process.h"

namespace normserve {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr int64_t kMaxDynamicDim = 96;

// max |a-b| / max(std(b), max|b| * 1e-3), as tests/kernels/parity_test.cc.
double RelativeError(const std::vector<float>& got, const std::vector<float>& want) {
  double max_abs = 0, mean = 0, var = 0, max_err = 0;
  for (float v : want) mean += v;
  mean /= want.size();
  for (size_t i = 0; i < want.size(); ++i) {
    max_abs = std::max(max_abs, std::fabs(static_cast<double>(want[i])));
    var += (want[i] - mean) * (want[i] - mean);
    max_err = std::max(max_err, std::fabs(static_cast<double>(got[i]) - want[i]));
  }
  return max_err / std::max(std::sqrt(var / want.size()), max_abs * 1e-3);
}

grpc::Status Infer(inference::GRPCInferenceService::Stub* stub, const std::vector<int64_t>& shape,
                   const std::vector<float>& data, inference::ModelInferResponse* resp) {
  inference::ModelInferRequest req;
  req.set_model_name("seg");
  auto* in = req.add_inputs();
  in->set_name("input");
  in->set_datatype("FP32");
  for (int64_t d : shape) in->add_shape(d);
  req.add_raw_input_contents(
      std::string(reinterpret_cast<const char*>(data.data()), data.size() * sizeof(float)));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  return stub->ModelInfer(&ctx, req, resp);
}

TEST(SegmentationServing, TwoSizesMatchPyTorchAndTheSideLimitIsNamed) {
  const std::string dir = testing::TestDataDir() + "/seg_head";
  if (testing::TestDataDir().empty() || !fs::exists(dir + "/model.onnx")) {
    GTEST_SKIP() << "run ctest -R service.export_segmentation_model first";
  }
  testing::TempDir repo;
  testing::AddModel(repo.path(), "seg", 1, dir + "/model.onnx");
  // 64x64 compiled at load; 48x80 on its first request.
  testing::WriteFile(repo.path() + "/seg/config.json",
                     absl::StrCat(R"({"max_dynamic_dim": )", kMaxDynamicDim,
                                  R"(, "precompile_shapes": [{"dims": [1, 3, 64, 64]}]})"));
  auto server = testing::ServerProcess::Start(repo.path(), {"--workers=1"});
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = inference::GRPCInferenceService::NewStub(
      grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials()));

  for (const char* suffix : {"b1", "hw2_b1", "hw2_b3", "b3"}) {
    SCOPED_TRACE(suffix);
    auto input = ReadNpyFile(absl::StrCat(dir, "/input_", suffix, ".npy"));
    auto want = ReadNpyFile(absl::StrCat(dir, "/output_", suffix, ".npy"));
    ASSERT_TRUE(input.ok()) << input.status();
    ASSERT_TRUE(want.ok()) << want.status();
    inference::ModelInferResponse resp;
    const auto start = std::chrono::steady_clock::now();
    const grpc::Status s = Infer(stub.get(), input->shape, input->data, &resp);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    ASSERT_TRUE(s.ok()) << s.error_message() << (*server)->Log();
    ASSERT_EQ(resp.outputs_size(), 1);
    ASSERT_EQ(resp.raw_output_contents_size(), 1);
    std::vector<int64_t> shape(resp.outputs(0).shape().begin(), resp.outputs(0).shape().end());
    EXPECT_EQ(shape, want->shape);
    const std::string& raw = resp.raw_output_contents(0);
    ASSERT_EQ(raw.size(), want->data.size() * sizeof(float));
    std::vector<float> got(want->data.size());
    std::memcpy(got.data(), raw.data(), raw.size());
    const double err = RelativeError(got, want->data);
    EXPECT_LT(err, 1e-4);
    std::printf("seg_head %s: error %.3g of the output scale, first request %.3f s\n", suffix, err,
                seconds);
  }

  // The new size compiled once (batch 3 runs as batch-1 plans, no compile), counted with
  // the plan memory it holds.
  const std::string metrics = testing::HttpGet((*server)->metrics_port(), "/metrics");
  const std::string labels = R"({model="seg",version="1"})";
  EXPECT_EQ(testing::MetricValue(metrics, "normserve_plan_compiles_total" + labels), 1) << metrics;
  EXPECT_EQ(testing::MetricValue(metrics, "normserve_plan_cache_entries" + labels), 2);
  EXPECT_GT(testing::MetricValue(metrics, "normserve_plan_cache_bytes" + labels), 0);
  EXPECT_GE(testing::MetricValue(metrics, "normserve_plan_cache_hits_total" + labels), 2);
  EXPECT_GT(testing::MetricValue(metrics, "normserve_plan_compile_seconds_total" + labels), 0);

  inference::ModelInferResponse resp;
  std::vector<float> wide(3 * 64 * (kMaxDynamicDim + 1), 0.5f);
  const grpc::Status s = Infer(stub.get(), {1, 3, 64, kMaxDynamicDim + 1}, wide, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_THAT(s.error_message(), AllOf(HasSubstr("dim 3"), HasSubstr("97"), HasSubstr("[1, 96]"),
                                       HasSubstr("max_dynamic_dim")));
  EXPECT_EQ((*server)->Terminate(), 0) << (*server)->Log();
}

}  // namespace
}  // namespace normserve
