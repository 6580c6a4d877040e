// KServe v2 handlers: each is decode, one call, encode.
#include "service/kserve_service.h"

#include "service/call_context.h"
#include "service/kserve_conversion.h"
#include "service/status_util.h"

namespace normserve {

grpc::ServerUnaryReactor* KServeServiceImpl::ServerLive(grpc::CallbackServerContext* context,
                                                        const inference::ServerLiveRequest*,
                                                        inference::ServerLiveResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  response->set_live(true);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* KServeServiceImpl::ServerReady(grpc::CallbackServerContext* context,
                                                         const inference::ServerReadyRequest*,
                                                         inference::ServerReadyResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  response->set_ready(!predictor_->draining());
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* KServeServiceImpl::ModelReady(grpc::CallbackServerContext* context,
                                                        const inference::ModelReadyRequest* request,
                                                        inference::ModelReadyResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<int64_t> version = ParseKServeVersion(request->version());
  if (!version.ok()) {
    reactor->Finish(ToGrpcStatus(version.status()));
    return reactor;
  }
  // Not ready is an answer, not an error: an unknown model is simply not ready.
  response->set_ready(!predictor_->draining() && manager_->Get(request->name(), *version).ok());
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* KServeServiceImpl::ServerMetadata(
    grpc::CallbackServerContext* context, const inference::ServerMetadataRequest*,
    inference::ServerMetadataResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  response->set_name("normserve");
  response->set_version(server_version_);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* KServeServiceImpl::ModelMetadata(
    grpc::CallbackServerContext* context, const inference::ModelMetadataRequest* request,
    inference::ModelMetadataResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<int64_t> version = ParseKServeVersion(request->version());
  if (!version.ok()) {
    reactor->Finish(ToGrpcStatus(version.status()));
    return reactor;
  }
  absl::StatusOr<std::shared_ptr<const Servable>> servable =
      manager_->Get(request->name(), *version);
  absl::StatusOr<std::vector<int64_t>> versions = manager_->Versions(request->name());
  if (servable.ok() && versions.ok()) ServableToKServeMetadata(**servable, *versions, response);
  reactor->Finish(ToGrpcStatus(servable.ok() ? versions.status() : servable.status()));
  return reactor;
}

grpc::ServerUnaryReactor* KServeServiceImpl::ModelInfer(grpc::CallbackServerContext* context,
                                                        const inference::ModelInferRequest* request,
                                                        inference::ModelInferResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<PredictCall> call = KServeToPredictCall(*request);
  if (call.ok()) {
    call->deadline = CallDeadline(*context);
    call->cancelled = CancellationProbe(context);
  }
  predictor_->Predict(std::move(call),
                      [reactor, request, response](absl::StatusOr<PredictResult> result) {
                        if (result.ok()) PredictResultToKServe(*request, *result, response);
                        reactor->Finish(ToGrpcStatus(result.status()));
                      });
  return reactor;
}

}  // namespace normserve
