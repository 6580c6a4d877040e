// Reduced-precision versions from the training endpoint, on the real normserve binary
// (issue 10 items 3 and 6). A commit on a bf16 model publishes a float file that serves in
// bf16, its statistics observed in fp32. An int8 version: a session commits with precision int8,
// the quality gate refuses it below its thresholds, force publishes it, and it serves in int8
// beside its float source; a session on that int8 version observes in the float source and its
// commit (precision left empty) quantizes again after the new statistics. The reported gate figures
// are recomputed here from what the server actually serves on the held-out requests against the
// float source run by the fp32 engine, and the published float source carries the statistics
// CalibrateLayerwise computes on the same samples.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/engine.h"
#include "kernels/model.h"
#include "kernels/precision.h"
#include "tests/service/server_process.h"
#include "tests/training/expect_layerwise_statistics.h"
#include "tests/training/training_server.h"

namespace normserve {
namespace {
namespace fs = std::filesystem;
using ::normserve::testing::Image;
using ::normserve::testing::kModel;
using ::normserve::testing::TempDir;
using ::normserve::testing::TrainingServer;
using ::testing::HasSubstr;

constexpr char kFloatSource[] = "float_model.onnx";
constexpr int kRequests = 20;  // every 5th held out: 16 calibrate, 4 measure

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<Tensor> ToKernelTensors(const std::vector<std::vector<float>>& images) {
  std::vector<Tensor> out;
  for (const auto& image : images) out.push_back(Tensor{{1, 1, 28, 28}, image});
  return out;
}

// The gate's figures recomputed from the outside: the server's answers on the held-out
// requests (which every 5th is, the proto documents) against the fp32 engine on `float_file`.
struct Measured {
  double agreement = 0;
  double max_relative_error = 0;
};
Measured MeasureServed(TrainingServer& server, int64_t version, const std::string& float_file,
                       const std::vector<std::vector<float>>& requests) {
  auto model = Model::LoadFile(float_file);
  EXPECT_TRUE(model.ok()) << model.status();
  CompileOptions options;
  options.intra_op_threads = 1;
  auto compiled = CompiledModel::Compile(*model, options);
  EXPECT_TRUE(compiled.ok()) << compiled.status();
  auto context = (*compiled)->NewContext();
  Measured m;
  int held_out = 0, agree = 0;
  for (size_t i = 4; i < requests.size(); i += 5) {
    v1::PredictResponse served;
    grpc::Status s = server.Predict(&served, requests[i], version);
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(served.model_spec().version(), version);
    std::vector<Tensor> fp32;
    EXPECT_TRUE(context->Run({TensorView{requests[i].data(), {1, 1, 28, 28}}}, &fp32).ok());
    const auto& q = served.outputs(0).float_data();
    const std::vector<float>& f = fp32[0].data;
    EXPECT_EQ(static_cast<size_t>(q.size()), f.size());
    double scale = 0, err = 0;
    for (size_t c = 0; c < f.size(); ++c) {
      scale = std::max(scale, std::fabs(static_cast<double>(f[c])));
      err = std::max(err, std::fabs(static_cast<double>(q[c]) - f[c]));
    }
    m.max_relative_error = std::max(m.max_relative_error, err / scale);
    agree += std::max_element(q.begin(), q.end()) - q.begin() ==
             std::max_element(f.begin(), f.end()) - f.begin();
    ++held_out;
  }
  m.agreement = static_cast<double>(agree) / held_out;
  return m;
}

std::vector<std::vector<float>> Accumulate(TrainingServer& server, const std::string& session,
                                           std::mt19937& rng, float gain, float offset) {
  std::vector<std::vector<float>> requests;
  for (int i = 0; i < kRequests; ++i) {
    std::vector<float> image = Image(rng);
    for (float& x : image) x = gain * x + offset;
    grpc::Status s = server.Accumulate(session, absl::StrCat(session, "-", i), image);
    EXPECT_TRUE(s.ok()) << s.error_message();
    requests.push_back(std::move(image));
  }
  return requests;
}

std::string ModelMetadataPrecision(TrainingServer& server, int64_t version) {
  grpc::ClientContext ctx;
  v1::GetModelMetadataRequest req;
  req.mutable_model_spec()->set_name(kModel);
  req.mutable_model_spec()->set_version(version);
  v1::GetModelMetadataResponse resp;
  grpc::Status s = server.serving()->GetModelMetadata(&ctx, req, &resp);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return resp.precision();
}

class PrecisionCommitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    repo_ = repo_dir_.path() + "/repo";
    state_ = state_dir_.path() + "/state";
    testing::AddModel(repo_, kModel, 1, testing::DefaultRepositoryModel(kModel));
  }
  std::string VersionFile(int64_t version, const std::string& file) const {
    return absl::StrCat(repo_, "/", kModel, "/", version, "/", file);
  }
  TempDir repo_dir_, state_dir_;
  std::string repo_, state_;
};

TEST_F(PrecisionCommitTest, GateForceServeThenRecalibrateOnTheInt8Version) {
  if (!CheckPrecisionSupported(Precision::kInt8, dnnl::get_effective_cpu_isa()).ok()) {
    // This CPU cannot run int8: the commit is refused naming the ISA, nothing published.
    TrainingServer server(repo_, state_);
    ASSERT_NE(server.process(), nullptr);
    const std::string id = server.StartSession("noisa");
    std::mt19937 rng(3);
    Accumulate(server, id, rng, 1.0f, 0.0f);
    v1::CommitResponse commit;
    grpc::Status s = server.Commit(id, true, &commit, "int8");
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_THAT(s.error_message(), HasSubstr("avx512_core_vnni"));
    EXPECT_FALSE(fs::exists(VersionFile(2, "model.onnx")));
    return;
  }
  std::mt19937 rng(11);
  std::vector<std::vector<float>> first;
  {
    // A gate nothing passes: refused with the figures, then forced.
    TrainingServer server(repo_, state_,
                          {"--training_int8_max_relative_logit_error=0.000001",
                           "--training_min_values_per_channel=16"});
    ASSERT_NE(server.process(), nullptr);
    const std::string id = server.StartSession("calib");
    first = Accumulate(server, id, rng, 1.0f, 0.0f);
    v1::CommitResponse commit;
    for (const char* bad : {"bf16", "fp16"}) {
      grpc::Status s = server.Commit(id, true, &commit, bad);
      EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad;
      EXPECT_THAT(s.error_message(), HasSubstr(absl::StrCat("precision \"", bad, "\"")));
    }
    grpc::Status refused = server.Commit(id, false, &commit, "int8");
    EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_THAT(refused.error_message(), HasSubstr("int8 max relative logit error"));
    EXPECT_THAT(refused.error_message(), HasSubstr("> 1e-06"));
    EXPECT_FALSE(fs::exists(VersionFile(2, "model.onnx")));
    std::string text = server.Metrics();
    EXPECT_GT(testing::MetricValue(
                  text, absl::StrCat("normserve_training_int8_max_relative_logit_error{model=\"",
                                     kModel, "\"}")),
              1e-6);
    EXPECT_EQ(testing::MetricValue(text, absl::StrCat("normserve_training_commits_total{model=\"",
                                                      kModel, "\",result=\"gate_failed\"}")),
              1);

    grpc::Status forced = server.Commit(id, true, &commit, "int8");
    ASSERT_TRUE(forced.ok()) << forced.error_message();
    EXPECT_EQ(commit.published().version(), 2);
    const v1::Int8Report& q = commit.report().int8();
    EXPECT_FALSE(q.gate_passed());
    EXPECT_EQ(q.calibration_samples(), 16);
    EXPECT_EQ(q.held_out_samples(), 4);
    EXPECT_GT(q.quantized_layers(), 0);
    EXPECT_DOUBLE_EQ(q.max_relative_logit_error_limit(), 1e-6);
    std::printf("v2 (forced): top-1 agreement %.3f, max relative logit error %.4f, %d layers\n",
                q.top1_agreement(), q.max_relative_logit_error(), q.quantized_layers());

    // Serves in int8 from the QDQ file, with the float source beside it.
    EXPECT_EQ(ModelMetadataPrecision(server, 2), "int8");
    auto qdq = Model::LoadFile(VersionFile(2, "model.onnx"));
    ASSERT_TRUE(qdq.ok()) << qdq.status();
    EXPECT_GT((*qdq)->int8_convs(), 0);
    ASSERT_TRUE(fs::exists(VersionFile(2, kFloatSource)));
    const Measured m = MeasureServed(server, 2, VersionFile(2, kFloatSource), first);
    EXPECT_NEAR(m.agreement, q.top1_agreement(), 1e-9);
    EXPECT_NEAR(m.max_relative_error, q.max_relative_logit_error(),
                1e-5 * q.max_relative_logit_error());
    EXPECT_LT(m.max_relative_error, 0.25);  // a usable int8 version all the same
    text = server.Metrics();
    EXPECT_NEAR(testing::MetricValue(text, absl::StrCat("normserve_training_int8_top1_agreement{"
                                                        "model=\"",
                                                        kModel, "\"}")),
                q.top1_agreement(), 1e-9);

    // ExportModel of the int8 version is its QDQ file.
    std::string exported;
    ASSERT_TRUE(server.Export(2, &exported).ok());
    EXPECT_EQ(exported, ReadFile(VersionFile(2, "model.onnx")));
  }

  // Restarted with the default gate. A session on the int8 version observes in its float
  // source (it has BN layers; the QDQ file has none), and a shifted distribution gets new
  // statistics and new scales without asking for int8 again.
  TrainingServer server(repo_, state_, {"--training_min_values_per_channel=16"});
  ASSERT_NE(server.process(), nullptr);
  grpc::ClientContext sctx;
  server.Authorize(&sctx);
  v1::StartSessionRequest sreq;
  sreq.mutable_model_spec()->set_name(kModel);
  sreq.set_session_id("shift");
  v1::StartSessionResponse started;
  ASSERT_TRUE(server.training()->StartSession(&sctx, sreq, &started).ok());
  EXPECT_EQ(started.base().version(), 2);
  auto float_v2 = Model::LoadFile(VersionFile(2, kFloatSource));
  ASSERT_TRUE(float_v2.ok());
  EXPECT_EQ(started.layers_size(), static_cast<int>((*float_v2)->bn_layers().size()));
  EXPECT_GT(started.layers_size(), 0);

  const std::vector<std::vector<float>> shifted = Accumulate(server, "shift", rng, 0.6f, 0.35f);
  v1::CommitResponse commit;
  grpc::Status c = server.Commit("shift", false, &commit);
  ASSERT_TRUE(c.ok()) << c.error_message();
  EXPECT_EQ(commit.published().version(), 3);
  const v1::Int8Report& q = commit.report().int8();
  std::printf("v3 (shifted): top-1 agreement %.3f, max relative logit error %.4f\n",
              q.top1_agreement(), q.max_relative_logit_error());
  EXPECT_TRUE(q.gate_passed());
  EXPECT_GE(q.top1_agreement(), 0.98);
  EXPECT_LE(q.max_relative_logit_error(), 0.25);
  EXPECT_EQ(ModelMetadataPrecision(server, 3), "int8");
  EXPECT_NE(ReadFile(VersionFile(3, "model.onnx")), ReadFile(VersionFile(2, "model.onnx")));
  const Measured m = MeasureServed(server, 3, VersionFile(3, kFloatSource), shifted);
  EXPECT_NEAR(m.agreement, q.top1_agreement(), 1e-9);
  EXPECT_NEAR(m.max_relative_error, q.max_relative_logit_error(),
              1e-5 * q.max_relative_logit_error());

  // The float source carries the exact layer-wise statistics of the shifted samples,
  // computed on v2's float source.
  auto float_v3 = Model::LoadFile(VersionFile(3, kFloatSource));
  ASSERT_TRUE(float_v3.ok());
  testing::ExpectLayerwiseStatistics(*float_v2, ToKernelTensors(shifted), **float_v3);

  // A rollback to the int8 v2 takes its float source along.
  grpc::ClientContext rctx;
  server.Authorize(&rctx);
  v1::RollbackRequest rreq;
  rreq.mutable_model_spec()->set_name(kModel);
  rreq.mutable_model_spec()->set_version(2);
  v1::RollbackResponse rolled;
  ASSERT_TRUE(server.training()->Rollback(&rctx, rreq, &rolled).ok());
  EXPECT_EQ(rolled.published().version(), 4);
  EXPECT_EQ(ReadFile(VersionFile(4, kFloatSource)), ReadFile(VersionFile(2, kFloatSource)));
  EXPECT_EQ(ModelMetadataPrecision(server, 4), "int8");
}

TEST_F(PrecisionCommitTest, CommitOnABf16ModelServesBf16WithStatisticsObservedInFp32) {
  testing::WriteFile(absl::StrCat(repo_, "/", kModel, "/config.json"),
                     "{\"name\": \"fashion_bn_cnn\", \"precision\": \"bf16\"}");
  TrainingServer server(repo_, state_, {"--training_min_values_per_channel=16"});
  if (!CheckPrecisionSupported(Precision::kBf16, dnnl::get_effective_cpu_isa()).ok()) {
    // No bf16 instructions: the model is refused at load, so nothing serves or trains.
    ASSERT_NE(server.process(), nullptr);
    v1::PredictResponse r;
    EXPECT_FALSE(server.Predict(&r).ok());
    return;
  }
  ASSERT_NE(server.process(), nullptr);
  EXPECT_EQ(ModelMetadataPrecision(server, 1), "bf16");
  const std::string id = server.StartSession("bf16");
  std::mt19937 rng(17);
  const std::vector<std::vector<float>> requests = Accumulate(server, id, rng, 0.7f, 0.2f);
  v1::CommitResponse commit;
  // config.json serves every version in bf16: an int8 (QDQ) version is refused up front.
  grpc::Status int8 = server.Commit(id, true, &commit, "int8");
  EXPECT_EQ(int8.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(int8.error_message(), HasSubstr("sets precision bf16"));
  grpc::Status c = server.Commit(id, true, &commit);
  ASSERT_TRUE(c.ok()) << c.error_message();
  EXPECT_EQ(commit.published().version(), 2);
  EXPECT_FALSE(commit.report().has_int8());
  EXPECT_EQ(ModelMetadataPrecision(server, 2), "bf16");
  EXPECT_FALSE(fs::exists(VersionFile(2, kFloatSource)));

  // Observed in fp32: the statistics are CalibrateLayerwise's in float to 1e-6, far below
  // bf16's 8-bit mantissa (relative steps of 0.4%).
  auto base = Model::LoadFile(testing::DefaultRepositoryModel(kModel));
  ASSERT_TRUE(base.ok());
  auto published = Model::LoadFile(VersionFile(2, "model.onnx"));
  ASSERT_TRUE(published.ok());
  EXPECT_EQ((*published)->int8_convs(), 0);
  testing::ExpectLayerwiseStatistics(*base, ToKernelTensors(requests), **published);
  // And it serves: bf16 output of v2 close to the fp32 engine on the same file.
  CompileOptions options;
  options.intra_op_threads = 1;
  auto fp32 = CompiledModel::Compile(*published, options);
  ASSERT_TRUE(fp32.ok());
  auto context = (*fp32)->NewContext();
  std::vector<Tensor> want;
  ASSERT_TRUE(context->Run({TensorView{requests[0].data(), {1, 1, 28, 28}}}, &want).ok());
  v1::PredictResponse got;
  ASSERT_TRUE(server.Predict(&got, requests[0], 2).ok());
  double scale = 0, err = 0;
  for (size_t k = 0; k < want[0].data.size(); ++k) {
    scale = std::max(scale, std::fabs(static_cast<double>(want[0].data[k])));
    err = std::max(err,
                   std::fabs(static_cast<double>(got.outputs(0).float_data(k)) - want[0].data[k]));
  }
  EXPECT_GT(err, 0);  // bf16 arithmetic, not fp32
  EXPECT_LT(err / scale, 0.05);
}

}  // namespace
}  // namespace normserve
