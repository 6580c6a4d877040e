// A normserve process with the training listener on, and a client of both endpoints, for
// the training integration tests (the real binary over loopback gRPC).
#ifndef NORMSERVE_TESTS_TRAINING_TRAINING_SERVER_H_
#define NORMSERVE_TESTS_TRAINING_TRAINING_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "normserve/v1/inference.grpc.pb.h"
#include "normserve/v1/training.grpc.pb.h"
#include "tests/service/server_process.h"
#include "tests/service/temp_dir.h"

namespace normserve {
namespace testing {

inline constexpr char kModel[] = "fashion_bn_cnn";
inline constexpr char kToken[] = "s3cret-training-token";

// A 28x28 noise image around a random offset (a Fashion-MNIST-sized input).
inline std::vector<float> Image(std::mt19937& rng) {
  std::normal_distribution<float> offset(0.3f, 0.2f), noise(0.0f, 0.3f);
  std::vector<float> v(784);
  const float o = offset(rng);
  for (float& x : v) x = o + noise(rng);
  return v;
}

inline v1::Tensor ToTensor(const std::vector<float>& values, int64_t batch) {
  v1::Tensor t;
  t.set_dtype(v1::DATA_TYPE_FP32);
  for (int64_t d : {batch, int64_t{1}, int64_t{28}, int64_t{28}}) t.add_shape(d);
  t.set_raw_data(
      std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float)));
  return t;
}

class TrainingServer {
 public:
  TrainingServer(const std::string& repo, const std::string& state,
                 std::vector<std::string> extra = {}) {
    token_file_ = dir_.path() + "/token";
    std::ofstream(token_file_) << kToken << "\n";
    training_port_ = testing::FreePort();
    std::vector<std::string> flags = {absl::StrCat("--training_port=", training_port_),
                                      "--training_token_file=" + token_file_,
                                      "--training_state_dir=" + state,
                                      "--training_min_values_per_channel=32",
                                      "--training_max_relative_sem=0.5",
                                      "--workers=2"};
    flags.insert(flags.end(), extra.begin(), extra.end());
    auto p = ServerProcess::Start(repo, flags);
    EXPECT_TRUE(p.ok()) << p.status();
    if (!p.ok()) return;
    process_ = *std::move(p);
    training_ = v1::TrainingService::NewStub(grpc::CreateChannel(
        absl::StrCat("127.0.0.1:", training_port_), grpc::InsecureChannelCredentials()));
    serving_ = v1::InferenceService::NewStub(
        grpc::CreateChannel(process_->address(), grpc::InsecureChannelCredentials()));
  }

  ServerProcess* process() { return process_.get(); }
  v1::TrainingService::Stub* training() { return training_.get(); }
  v1::InferenceService::Stub* serving() { return serving_.get(); }
  // Like kill -9 of the process (ServerProcess's destructor sends SIGKILL).
  void Kill() { process_.reset(); }

  void Authorize(grpc::ClientContext* ctx) {
    ctx->AddMetadata("authorization", absl::StrCat("Bearer ", kToken));
  }

  std::string StartSession(const std::string& id = "", int64_t version = 0) {
    grpc::ClientContext ctx;
    Authorize(&ctx);
    v1::StartSessionRequest req;
    req.mutable_model_spec()->set_name(kModel);
    req.mutable_model_spec()->set_version(version);
    req.set_session_id(id);
    v1::StartSessionResponse resp;
    grpc::Status s = training_->StartSession(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.session_id();
  }

  grpc::Status Accumulate(const std::string& session, const std::string& id,
                          const std::vector<float>& values, int64_t batch = 1,
                          v1::AccumulateResponse* out = nullptr) {
    grpc::ClientContext ctx;
    Authorize(&ctx);
    v1::AccumulateRequest req;
    req.set_session_id(session);
    req.set_request_id(id);
    *req.add_inputs() = ToTensor(values, batch);
    v1::AccumulateResponse resp;
    grpc::Status s = training_->Accumulate(&ctx, req, &resp);
    if (out != nullptr) *out = resp;
    return s;
  }

  grpc::Status Commit(const std::string& session, bool force, v1::CommitResponse* out,
                      const std::string& precision = "") {
    grpc::ClientContext ctx;
    Authorize(&ctx);
    v1::CommitRequest req;
    req.set_session_id(session);
    req.set_force(force);
    req.set_precision(precision);
    return training_->Commit(&ctx, req, out);
  }

  grpc::Status Report(const std::string& session, bool exact, v1::ReportResponse* out) {
    grpc::ClientContext ctx;
    Authorize(&ctx);
    v1::ReportRequest req;
    req.set_session_id(session);
    req.set_exact(exact);
    req.set_per_channel(true);
    return training_->Report(&ctx, req, out);
  }

  // `values` (one 28x28 image) on `version` (0: the latest), outputs as float_data.
  grpc::Status Predict(v1::PredictResponse* out,
                       const std::vector<float>& values = std::vector<float>(784, 0.1f),
                       int64_t version = 0) {
    grpc::ClientContext ctx;
    v1::PredictRequest req;
    req.mutable_model_spec()->set_name(kModel);
    req.mutable_model_spec()->set_version(version);
    req.set_output_encoding(v1::TENSOR_ENCODING_FLOAT_DATA);
    *req.add_inputs() = ToTensor(values, 1);
    return serving_->Predict(&ctx, req, out);
  }

  // The bytes ExportModel returns for `version`.
  grpc::Status Export(int64_t version, std::string* onnx) {
    grpc::ClientContext ctx;
    Authorize(&ctx);
    v1::ExportModelRequest req;
    req.mutable_model_spec()->set_name(kModel);
    req.mutable_model_spec()->set_version(version);
    v1::ExportModelResponse resp;
    grpc::Status s = training_->ExportModel(&ctx, req, &resp);
    *onnx = resp.onnx();
    return s;
  }

  std::string Metrics() { return testing::HttpGet(process_->metrics_port(), "/metrics"); }

 private:
  TempDir dir_;
  std::string token_file_;
  int training_port_ = 0;
  std::unique_ptr<ServerProcess> process_;
  std::unique_ptr<v1::TrainingService::Stub> training_;
  std::unique_ptr<v1::InferenceService::Stub> serving_;
};

}  // namespace testing
}  // namespace normserve

#endif  // NORMSERVE_TESTS_TRAINING_TRAINING_SERVER_H_
