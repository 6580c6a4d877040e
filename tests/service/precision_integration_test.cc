// config.json "precision" through the real `normserve` binary: bf16 and fp32 versions side
// by side (metadata on both APIs, the model-info metric, FP32 on the wire, outputs within
// bf16 rounding), an unknown value and int8 refused at load naming the field and the
// allowed values, and a CPU without AVX512-BF16 (oneDNN capped with ONEDNN_MAX_CPU_ISA)
// refusing the bf16 load naming the ISA.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kserve/grpc_predict_v2.grpc.pb.h"
#include "normserve/v1/inference.grpc.pb.h"
#include "server_process.h"

namespace normserve {
namespace {

namespace v1 = ::normserve::v1;
using testing::AddModel;
using testing::DefaultRepositoryModel;
using testing::ServerProcess;
using testing::TempDir;
using testing::WriteFile;

void AddTiny(const TempDir& repo, const std::string& name, const std::string& config) {
  AddModel(repo.path(), name, 1, DefaultRepositoryModel("tiny_bn"));
  if (!config.empty()) WriteFile(repo.path() + "/" + name + "/config.json", config);
}

std::map<std::string, std::string> LastErrors(v1::InferenceService::Stub* stub) {
  grpc::ClientContext ctx;
  v1::ListModelsResponse resp;
  EXPECT_TRUE(stub->ListModels(&ctx, v1::ListModelsRequest(), &resp).ok());
  std::map<std::string, std::string> out;
  for (const auto& m : resp.models()) out[m.name()] = m.last_error();
  return out;
}

std::vector<float> PredictTiny(v1::InferenceService::Stub* stub, const std::string& model) {
  v1::PredictRequest req;
  req.mutable_model_spec()->set_name(model);
  v1::Tensor* t = req.add_inputs();
  t->set_name("input");
  t->set_dtype(v1::DATA_TYPE_FP32);
  for (int64_t d : {1, 3, 8, 8}) t->add_shape(d);
  std::vector<float> x(3 * 8 * 8);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.1f * i);
  t->set_raw_data(std::string(reinterpret_cast<const char*>(x.data()), x.size() * sizeof(float)));
  grpc::ClientContext ctx;
  v1::PredictResponse resp;
  const grpc::Status s = stub->Predict(&ctx, req, &resp);
  EXPECT_TRUE(s.ok()) << model << ": " << s.error_message();
  if (!s.ok()) return {};
  EXPECT_EQ(resp.outputs(0).dtype(), v1::DATA_TYPE_FP32);
  std::vector<float> y(resp.outputs(0).raw_data().size() / sizeof(float));
  std::memcpy(y.data(), resp.outputs(0).raw_data().data(), y.size() * sizeof(float));
  return y;
}

TEST(PrecisionIntegration, ConfigPrecisionServesAndShowsInMetadataAndMetrics) {
  TempDir repo;
  AddTiny(repo, "tiny_default", "");
  AddTiny(repo, "tiny_bf16", R"({"precision": "bf16"})");
  AddTiny(repo, "tiny_typo", R"({"precision": "fp16"})");
  AddTiny(repo, "tiny_int8", R"({"precision": "int8"})");
  auto server = ServerProcess::Start(repo.path());
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials());
  auto stub = v1::InferenceService::NewStub(channel);
  auto kserve = inference::GRPCInferenceService::NewStub(channel);

  const auto errors = LastErrors(stub.get());
  EXPECT_EQ(errors.at("tiny_default"), "");
  EXPECT_EQ(errors.at("tiny_bf16"), "");
  EXPECT_NE(errors.at("tiny_typo").find("precision \"fp16\" is not a precision (fp32, bf16, int8)"),
            std::string::npos)
      << errors.at("tiny_typo");
  EXPECT_NE(errors.at("tiny_typo").find("config.json"), std::string::npos);
  // tiny_bn is a float model: int8 needs the QDQ file calibration writes (on a CPU without
  // VNNI the ISA refusal comes first).
  EXPECT_TRUE(errors.at("tiny_int8").find("calibrate it first") != std::string::npos ||
              errors.at("tiny_int8").find("needs the CPU ISA avx512_core_vnni") !=
                  std::string::npos)
      << errors.at("tiny_int8");

  for (const auto& [model, want] :
       std::map<std::string, std::string>{{"tiny_default", "fp32"}, {"tiny_bf16", "bf16"}}) {
    grpc::ClientContext ctx;
    v1::GetModelMetadataRequest req;
    req.mutable_model_spec()->set_name(model);
    v1::GetModelMetadataResponse resp;
    ASSERT_TRUE(stub->GetModelMetadata(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.precision(), want) << model;
    grpc::ClientContext kctx;
    inference::ModelMetadataRequest kreq;
    kreq.set_name(model);
    inference::ModelMetadataResponse kresp;
    ASSERT_TRUE(kserve->ModelMetadata(&kctx, kreq, &kresp).ok());
    ASSERT_EQ(kresp.parameters().count("precision"), 1u) << model;
    EXPECT_EQ(kresp.parameters().at("precision").string_param(), want) << model;
  }

  // FP32 on the wire both ways; the bf16 version within bf16 rounding of the fp32 one
  // (3e-2 of the output scale, the bound precision_test justifies).
  const std::vector<float> fp32 = PredictTiny(stub.get(), "tiny_default");
  const std::vector<float> bf16 = PredictTiny(stub.get(), "tiny_bf16");
  ASSERT_EQ(fp32.size(), bf16.size());
  ASSERT_FALSE(fp32.empty());
  double scale = 0, err = 0;
  for (size_t i = 0; i < fp32.size(); ++i) {
    scale = std::max(scale, std::fabs(static_cast<double>(fp32[i])));
    err = std::max(err, std::fabs(static_cast<double>(bf16[i]) - fp32[i]));
  }
  EXPECT_LT(err, 3e-2 * scale);
  EXPECT_GT(err, 0) << "the bf16 version computed exactly what fp32 did: is it bf16?";

  const std::string metrics = testing::HttpGet((*server)->metrics_port(), "/metrics");
  EXPECT_EQ(testing::MetricValue(
                metrics, R"(normserve_model_info{model="tiny_bf16",precision="bf16",version="1"})"),
            1)
      << metrics;
  EXPECT_EQ(
      testing::MetricValue(
          metrics, R"(normserve_model_info{model="tiny_default",precision="fp32",version="1"})"),
      1)
      << metrics;
  EXPECT_EQ((*server)->Terminate(), 0) << (*server)->Log();
}

// oneDNN reads ONEDNN_MAX_CPU_ISA at its first ISA query: a server capped at avx512_core
// is this machine without AVX512-BF16.
TEST(PrecisionIntegration, CpuWithoutBf16RefusesTheLoadNamingTheIsa) {
  TempDir repo;
  AddTiny(repo, "tiny_fp32", "");
  AddTiny(repo, "tiny_bf16", R"({"precision": "bf16"})");
  ASSERT_EQ(setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE", 1), 0);
  auto server = ServerProcess::Start(repo.path());
  unsetenv("ONEDNN_MAX_CPU_ISA");
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = v1::InferenceService::NewStub(
      grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials()));
  const auto errors = LastErrors(stub.get());
  EXPECT_EQ(errors.at("tiny_fp32"), "");
  EXPECT_NE(errors.at("tiny_bf16").find("precision bf16 needs the CPU ISA avx512_core_bf16"),
            std::string::npos)
      << errors.at("tiny_bf16");
  EXPECT_NE(errors.at("tiny_bf16").find("offers avx512_core "), std::string::npos)
      << errors.at("tiny_bf16");
  EXPECT_FALSE(PredictTiny(stub.get(), "tiny_fp32").empty());
  EXPECT_EQ((*server)->Terminate(), 0) << (*server)->Log();
}

}  // namespace
}  // namespace normserve
