// normserve.v1 handlers: each is decode, one call, encode.
#include "service/inference_service.h"

#include "service/call_context.h"
#include "service/normserve_conversion.h"
#include "service/status_util.h"

namespace normserve {

grpc::ServerUnaryReactor* InferenceServiceImpl::Predict(grpc::CallbackServerContext* context,
                                                        const grpc::ByteBuffer* request,
                                                        grpc::ByteBuffer* response) {
  return DecodeAndRun<v1::PredictRequest, v1::PredictResponse>(
      request, response, [&](PredictRpc* call) { HandlePredict(context, call); });
}

grpc::ServerUnaryReactor* InferenceServiceImpl::GetModelMetadata(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return DecodeAndRun<v1::GetModelMetadataRequest, v1::GetModelMetadataResponse>(
      request, response, [&](MetadataRpc* call) { HandleGetModelMetadata(call); });
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ListModels(grpc::CallbackServerContext* context,
                                                           const grpc::ByteBuffer* request,
                                                           grpc::ByteBuffer* response) {
  return DecodeAndRun<v1::ListModelsRequest, v1::ListModelsResponse>(
      request, response, [&](ListRpc* call) { HandleListModels(call); });
}

grpc::ServerUnaryReactor* InferenceServiceImpl::LoadModel(grpc::CallbackServerContext* context,
                                                          const grpc::ByteBuffer* request,
                                                          grpc::ByteBuffer* response) {
  return DecodeAndRun<v1::LoadModelRequest, v1::LoadModelResponse>(
      request, response, [&](LoadRpc* call) { HandleLoadModel(call); });
}

grpc::ServerUnaryReactor* InferenceServiceImpl::UnloadModel(grpc::CallbackServerContext* context,
                                                            const grpc::ByteBuffer* request,
                                                            grpc::ByteBuffer* response) {
  return DecodeAndRun<v1::UnloadModelRequest, v1::UnloadModelResponse>(
      request, response, [&](UnloadRpc* call) { HandleUnloadModel(call); });
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ReloadModel(grpc::CallbackServerContext* context,
                                                            const grpc::ByteBuffer* request,
                                                            grpc::ByteBuffer* response) {
  return DecodeAndRun<v1::ReloadModelRequest, v1::ReloadModelResponse>(
      request, response, [&](ReloadRpc* call) { HandleReloadModel(call); });
}

void InferenceServiceImpl::HandlePredict(grpc::CallbackServerContext* context, PredictRpc* rpc) {
  absl::StatusOr<PredictCall> call = ProtoToPredictCall(rpc->request());
  if (call.ok()) {
    call->deadline = CallDeadline(*context);
    call->cancelled = CancellationProbe(context);
  }
  predictor_->Predict(std::move(call), [rpc](absl::StatusOr<PredictResult> result) {
    if (result.ok()) PredictResultToProto(rpc->request(), *result, rpc->response());
    rpc->Finish(ToGrpcStatus(result.status()));
  });
}

void InferenceServiceImpl::HandleGetModelMetadata(MetadataRpc* call) {
  const v1::ModelSpec& spec = call->request().model_spec();
  absl::StatusOr<std::shared_ptr<const Servable>> servable =
      manager_->Get(spec.name(), spec.version());
  absl::StatusOr<std::vector<int64_t>> versions = manager_->Versions(spec.name());
  if (servable.ok() && versions.ok()) ServableToMetadata(**servable, *versions, call->response());
  call->Finish(ToGrpcStatus(servable.ok() ? versions.status() : servable.status()));
}

void InferenceServiceImpl::HandleListModels(ListRpc* call) {
  for (const ModelStatusInfo& info : manager_->List()) {
    StatusInfoToProto(info, call->response()->add_models());
  }
  call->Finish(grpc::Status::OK);
}

void InferenceServiceImpl::HandleLoadModel(LoadRpc* call) {
  absl::Status queued = admin_->Submit([this, call] {
    absl::StatusOr<ModelStatusInfo> info = manager_->Load(call->request().name());
    if (info.ok()) StatusInfoToProto(*info, call->response()->mutable_status());
    call->Finish(ToGrpcStatus(info.status()));
  });
  if (!queued.ok()) call->Finish(ToGrpcStatus(queued));
}

void InferenceServiceImpl::HandleUnloadModel(UnloadRpc* call) {
  // Through the admin executor too: it waits for a load in progress (load_mu_).
  absl::Status queued = admin_->Submit(
      [this, call] { call->Finish(ToGrpcStatus(manager_->Unload(call->request().name()))); });
  if (!queued.ok()) call->Finish(ToGrpcStatus(queued));
}

void InferenceServiceImpl::HandleReloadModel(ReloadRpc* call) {
  absl::Status queued = admin_->Submit([this, call] {
    absl::StatusOr<std::vector<ModelStatusInfo>> infos = manager_->Reload(call->request().name());
    if (infos.ok()) {
      for (const ModelStatusInfo& info : *infos) {
        StatusInfoToProto(info, call->response()->add_models());
      }
    }
    call->Finish(ToGrpcStatus(infos.status()));
  });
  if (!queued.ok()) call->Finish(ToGrpcStatus(queued));
}

}  // namespace normserve
