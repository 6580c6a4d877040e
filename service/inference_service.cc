// normserve.v1 handlers: each is decode, one call, encode.
#include "service/inference_service.h"

#include "service/call_context.h"
#include "service/normserve_conversion.h"
#include "service/status_util.h"

namespace normserve {

grpc::ServerUnaryReactor* InferenceServiceImpl::Predict(grpc::CallbackServerContext* context,
                                                        const v1::PredictRequest* request,
                                                        v1::PredictResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<PredictCall> call = ProtoToPredictCall(*request);
  if (call.ok()) {
    call->deadline = CallDeadline(*context);
    call->cancelled = CancellationProbe(context);
  }
  predictor_->Predict(std::move(call),
                      [reactor, request, response](absl::StatusOr<PredictResult> result) {
                        if (result.ok()) PredictResultToProto(*request, *result, response);
                        reactor->Finish(ToGrpcStatus(result.status()));
                      });
  return reactor;
}

grpc::ServerUnaryReactor* InferenceServiceImpl::GetModelMetadata(
    grpc::CallbackServerContext* context, const v1::GetModelMetadataRequest* request,
    v1::GetModelMetadataResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<std::shared_ptr<const Servable>> servable =
      manager_->Get(request->model_spec().name(), request->model_spec().version());
  absl::StatusOr<std::vector<int64_t>> versions = manager_->Versions(request->model_spec().name());
  if (servable.ok() && versions.ok()) ServableToMetadata(**servable, *versions, response);
  reactor->Finish(ToGrpcStatus(servable.ok() ? versions.status() : servable.status()));
  return reactor;
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ListModels(grpc::CallbackServerContext* context,
                                                           const v1::ListModelsRequest* request,
                                                           v1::ListModelsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  for (const ModelStatusInfo& info : manager_->List()) {
    StatusInfoToProto(info, response->add_models());
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* InferenceServiceImpl::LoadModel(grpc::CallbackServerContext* context,
                                                          const v1::LoadModelRequest* request,
                                                          v1::LoadModelResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Status queued = admin_->Submit([this, reactor, request, response] {
    absl::StatusOr<ModelStatusInfo> info = manager_->Load(request->name());
    if (info.ok()) StatusInfoToProto(*info, response->mutable_status());
    reactor->Finish(ToGrpcStatus(info.status()));
  });
  if (!queued.ok()) reactor->Finish(ToGrpcStatus(queued));
  return reactor;
}

grpc::ServerUnaryReactor* InferenceServiceImpl::UnloadModel(grpc::CallbackServerContext* context,
                                                            const v1::UnloadModelRequest* request,
                                                            v1::UnloadModelResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  // Through the admin executor too: it waits for a load in progress (load_mu_).
  absl::Status queued = admin_->Submit([this, reactor, request] {
    reactor->Finish(ToGrpcStatus(manager_->Unload(request->name())));
  });
  if (!queued.ok()) reactor->Finish(ToGrpcStatus(queued));
  return reactor;
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ReloadModel(grpc::CallbackServerContext* context,
                                                            const v1::ReloadModelRequest* request,
                                                            v1::ReloadModelResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Status queued = admin_->Submit([this, reactor, request, response] {
    absl::StatusOr<std::vector<ModelStatusInfo>> infos = manager_->Reload(request->name());
    if (infos.ok()) {
      for (const ModelStatusInfo& info : *infos) StatusInfoToProto(info, response->add_models());
    }
    reactor->Finish(ToGrpcStatus(infos.status()));
  });
  if (!queued.ok()) reactor->Finish(ToGrpcStatus(queued));
  return reactor;
}

}  // namespace normserve
