// KServe v2 handlers: each is decode, one call, encode.
#include "service/kserve_service.h"

#include "service/call_context.h"
#include "service/kserve_conversion.h"
#include "service/status_util.h"

namespace normserve {

grpc::ServerUnaryReactor* KServeServiceImpl::ServerLive(grpc::CallbackServerContext* context,
                                                        const grpc::ByteBuffer* request,
                                                        grpc::ByteBuffer* response) {
  return DecodeAndRun<inference::ServerLiveRequest, inference::ServerLiveResponse>(
      request, response, [&](ServerLiveRpc* call) { HandleServerLive(call); });
}

grpc::ServerUnaryReactor* KServeServiceImpl::ServerReady(grpc::CallbackServerContext* context,
                                                         const grpc::ByteBuffer* request,
                                                         grpc::ByteBuffer* response) {
  return DecodeAndRun<inference::ServerReadyRequest, inference::ServerReadyResponse>(
      request, response, [&](ServerReadyRpc* call) { HandleServerReady(call); });
}

grpc::ServerUnaryReactor* KServeServiceImpl::ModelReady(grpc::CallbackServerContext* context,
                                                        const grpc::ByteBuffer* request,
                                                        grpc::ByteBuffer* response) {
  return DecodeAndRun<inference::ModelReadyRequest, inference::ModelReadyResponse>(
      request, response, [&](ModelReadyRpc* call) { HandleModelReady(call); });
}

grpc::ServerUnaryReactor* KServeServiceImpl::ServerMetadata(grpc::CallbackServerContext* context,
                                                            const grpc::ByteBuffer* request,
                                                            grpc::ByteBuffer* response) {
  return DecodeAndRun<inference::ServerMetadataRequest, inference::ServerMetadataResponse>(
      request, response, [&](ServerMetadataRpc* call) { HandleServerMetadata(call); });
}

grpc::ServerUnaryReactor* KServeServiceImpl::ModelMetadata(grpc::CallbackServerContext* context,
                                                           const grpc::ByteBuffer* request,
                                                           grpc::ByteBuffer* response) {
  return DecodeAndRun<inference::ModelMetadataRequest, inference::ModelMetadataResponse>(
      request, response, [&](ModelMetadataRpc* call) { HandleModelMetadata(call); });
}

grpc::ServerUnaryReactor* KServeServiceImpl::ModelInfer(grpc::CallbackServerContext* context,
                                                        const grpc::ByteBuffer* request,
                                                        grpc::ByteBuffer* response) {
  return DecodeAndRun<inference::ModelInferRequest, inference::ModelInferResponse>(
      request, response, [&](ModelInferRpc* call) { HandleModelInfer(context, call); });
}

void KServeServiceImpl::HandleServerLive(ServerLiveRpc* call) {
  call->response()->set_live(true);
  call->Finish(grpc::Status::OK);
}

void KServeServiceImpl::HandleServerReady(ServerReadyRpc* call) {
  call->response()->set_ready(!predictor_->draining());
  call->Finish(grpc::Status::OK);
}

void KServeServiceImpl::HandleModelReady(ModelReadyRpc* call) {
  absl::StatusOr<int64_t> version = ParseKServeVersion(call->request().version());
  if (!version.ok()) {
    call->Finish(ToGrpcStatus(version.status()));
    return;
  }
  // Not ready is an answer, not an error: an unknown model is simply not ready.
  call->response()->set_ready(!predictor_->draining() &&
                              manager_->Get(call->request().name(), *version).ok());
  call->Finish(grpc::Status::OK);
}

void KServeServiceImpl::HandleServerMetadata(ServerMetadataRpc* call) {
  call->response()->set_name("normserve");
  call->response()->set_version(server_version_);
  call->Finish(grpc::Status::OK);
}

void KServeServiceImpl::HandleModelMetadata(ModelMetadataRpc* call) {
  absl::StatusOr<int64_t> version = ParseKServeVersion(call->request().version());
  if (!version.ok()) {
    call->Finish(ToGrpcStatus(version.status()));
    return;
  }
  absl::StatusOr<std::shared_ptr<const Servable>> servable =
      manager_->Get(call->request().name(), *version);
  absl::StatusOr<std::vector<int64_t>> versions = manager_->Versions(call->request().name());
  if (servable.ok() && versions.ok()) {
    ServableToKServeMetadata(**servable, *versions, call->response());
  }
  call->Finish(ToGrpcStatus(servable.ok() ? versions.status() : servable.status()));
}

void KServeServiceImpl::HandleModelInfer(grpc::CallbackServerContext* context, ModelInferRpc* rpc) {
  absl::StatusOr<PredictCall> call = KServeToPredictCall(rpc->request());
  if (call.ok()) {
    call->deadline = CallDeadline(*context);
    call->cancelled = CancellationProbe(context);
  }
  predictor_->Predict(std::move(call), [rpc](absl::StatusOr<PredictResult> result) {
    if (result.ok()) PredictResultToKServe(rpc->request(), *result, rpc->response());
    rpc->Finish(ToGrpcStatus(result.status()));
  });
}

}  // namespace normserve
