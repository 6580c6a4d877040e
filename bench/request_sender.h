// The request one load-generator client sends, per API: normserve.v1 Predict, KServe v2
// ModelInfer, or the training endpoint's Accumulate (one observed forward pass and a
// durable log append per request, into a session the generator opens per configuration).
#ifndef NORMSERVE_BENCH_REQUEST_SENDER_H_
#define NORMSERVE_BENCH_REQUEST_SENDER_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "bench/engine_runner.h"
#include "kserve/grpc_predict_v2.grpc.pb.h"
#include "normserve/v1/inference.grpc.pb.h"
#include "normserve/v1/training.grpc.pb.h"

namespace normserve {
namespace bench {

enum class Api { kNormserve, kKserve, kTraining };
// "normserve", "kserve", "training".
absl::StatusOr<Api> ParseApi(absl::string_view name);
const char* ApiName(Api api);

// One request message per API, built once from the engine's inputs; every client sends
// the same tensor bytes.
class RequestSender {
 public:
  RequestSender(Api api, const std::string& model, const PreparedEngine& e);

  Api api() const { return api_; }
  // Training: the session every Accumulate goes to and the bearer token; set before the
  // callers of a configuration are made.
  void SetTrainingSession(const std::string& session_id, const std::string& token);

  // A per-thread caller: stubs are cheap, the channel is what is shared or not. `id`
  // makes its Accumulate request ids unique within a session.
  class Caller {
   public:
    Caller(const RequestSender* sender, std::shared_ptr<grpc::Channel> channel, int id = 0);
    // One blocking call; checks that the answer carries outputs (or was accepted).
    absl::Status Call();

   private:
    const RequestSender* sender_;
    std::unique_ptr<v1::InferenceService::Stub> predict_;
    std::unique_ptr<inference::GRPCInferenceService::Stub> kserve_;
    std::unique_ptr<v1::TrainingService::Stub> training_;
    v1::AccumulateRequest accumulate_;  // own copy: the request id changes per call
    std::string id_prefix_;
    int64_t next_ = 0;
  };

 private:
  const Api api_;
  const std::string model_;
  v1::PredictRequest predict_request_;
  inference::ModelInferRequest kserve_request_;
  v1::AccumulateRequest accumulate_request_;
  std::string token_;
};

// Opens a training session on `model` (max_samples 0: the server's default) and returns
// its id; aborts one (its kept samples and log are deleted).
absl::StatusOr<std::string> StartTrainingSession(const std::shared_ptr<grpc::Channel>& channel,
                                                 const std::string& token, const std::string& model,
                                                 int64_t max_samples);
absl::Status AbortTrainingSession(const std::shared_ptr<grpc::Channel>& channel,
                                  const std::string& token, const std::string& session_id);

}  // namespace bench
}  // namespace normserve

#endif  // NORMSERVE_BENCH_REQUEST_SENDER_H_
