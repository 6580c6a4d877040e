// Request construction and blocking calls of the load generator's clients.
#include "bench/request_sender.h"

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"

namespace normserve {
namespace bench {
namespace {

absl::Status ToStatus(const grpc::Status& s) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

void Authorize(grpc::ClientContext* context, const std::string& token) {
  context->AddMetadata("authorization", absl::StrCat("Bearer ", token));
}

}  // namespace

absl::StatusOr<Api> ParseApi(absl::string_view name) {
  if (name == "normserve") return Api::kNormserve;
  if (name == "kserve") return Api::kKserve;
  if (name == "training") return Api::kTraining;
  return absl::InvalidArgumentError(absl::StrCat("--api: \"", name.substr(0, 32),
                                                 "\" is not an API (normserve, kserve, training)"));
}

const char* ApiName(Api api) {
  switch (api) {
    case Api::kNormserve:
      return "normserve";
    case Api::kKserve:
      return "kserve";
    case Api::kTraining:
      return "training";
  }
  return "?";
}

RequestSender::RequestSender(Api api, const std::string& model, const PreparedEngine& e)
    : api_(api), model_(model) {
  for (size_t i = 0; i < e.inputs.size(); ++i) {
    const TensorView& in = e.inputs[i];
    // x86-64 is little-endian: the float buffer is the wire encoding.
    const std::string raw(reinterpret_cast<const char*>(e.buffers[i].data()),
                          e.buffers[i].size() * sizeof(float));
    if (api_ == Api::kKserve) {
      kserve_request_.set_model_name(model);
      auto* t = kserve_request_.add_inputs();
      t->set_name(e.input_names[i]);
      t->set_datatype("FP32");
      for (int64_t d : in.shape) t->add_shape(d);
      kserve_request_.add_raw_input_contents(raw);
      continue;
    }
    if (api_ == Api::kNormserve) predict_request_.mutable_model_spec()->set_name(model);
    v1::Tensor* t =
        api_ == Api::kTraining ? accumulate_request_.add_inputs() : predict_request_.add_inputs();
    t->set_name(e.input_names[i]);
    t->set_dtype(v1::DATA_TYPE_FP32);
    for (int64_t d : in.shape) t->add_shape(d);
    t->set_raw_data(raw);
  }
}

void RequestSender::SetTrainingSession(const std::string& session_id, const std::string& token) {
  accumulate_request_.set_session_id(session_id);
  token_ = token;
}

RequestSender::Caller::Caller(const RequestSender* sender, std::shared_ptr<grpc::Channel> channel,
                              int id)
    : sender_(sender), id_prefix_(absl::StrCat("c", id, "-")) {
  switch (sender->api_) {
    case Api::kNormserve:
      predict_ = v1::InferenceService::NewStub(channel);
      break;
    case Api::kKserve:
      kserve_ = inference::GRPCInferenceService::NewStub(channel);
      break;
    case Api::kTraining:
      training_ = v1::TrainingService::NewStub(channel);
      accumulate_ = sender->accumulate_request_;
      break;
  }
}

absl::Status RequestSender::Caller::Call() {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  switch (sender_->api_) {
    case Api::kKserve: {
      inference::ModelInferResponse response;
      const grpc::Status s = kserve_->ModelInfer(&context, sender_->kserve_request_, &response);
      if (!s.ok()) return ToStatus(s);
      if (response.raw_output_contents_size() == 0) return absl::InternalError("no outputs");
      return absl::OkStatus();
    }
    case Api::kNormserve: {
      v1::PredictResponse response;
      const grpc::Status s = predict_->Predict(&context, sender_->predict_request_, &response);
      if (!s.ok()) return ToStatus(s);
      if (response.outputs_size() == 0) return absl::InternalError("no outputs");
      return absl::OkStatus();
    }
    case Api::kTraining: {
      Authorize(&context, sender_->token_);
      accumulate_.set_request_id(absl::StrCat(id_prefix_, next_++));
      v1::AccumulateResponse response;
      const grpc::Status s = training_->Accumulate(&context, accumulate_, &response);
      if (!s.ok()) return ToStatus(s);
      if (response.duplicate()) return absl::InternalError("a fresh request id was a duplicate");
      return absl::OkStatus();
    }
  }
  return absl::InternalError("unknown API");
}

absl::StatusOr<std::string> StartTrainingSession(const std::shared_ptr<grpc::Channel>& channel,
                                                 const std::string& token, const std::string& model,
                                                 int64_t max_samples) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  Authorize(&context, token);
  v1::StartSessionRequest request;
  request.mutable_model_spec()->set_name(model);
  request.mutable_options()->set_max_samples(max_samples);
  v1::StartSessionResponse response;
  const grpc::Status s =
      v1::TrainingService::NewStub(channel)->StartSession(&context, request, &response);
  if (!s.ok()) return ToStatus(s);
  return response.session_id();
}

absl::Status AbortTrainingSession(const std::shared_ptr<grpc::Channel>& channel,
                                  const std::string& token, const std::string& session_id) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  Authorize(&context, token);
  v1::AbortRequest request;
  request.set_session_id(session_id);
  v1::AbortResponse response;
  return ToStatus(v1::TrainingService::NewStub(channel)->Abort(&context, request, &response));
}

}  // namespace bench
}  // namespace normserve
