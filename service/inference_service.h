// gRPC adapter for normserve.v1.InferenceService (callback API): decode, one domain call,
// encode. Loads and reloads run on the admin executor, never on a gRPC thread. Methods
// are registered raw so that undecodable bytes get INVALID_ARGUMENT (service/unary_call.h).
#ifndef NORMSERVE_SERVICE_INFERENCE_SERVICE_H_
#define NORMSERVE_SERVICE_INFERENCE_SERVICE_H_

#include <grpcpp/support/byte_buffer.h>

#include "normserve/v1/inference.grpc.pb.h"
#include "service/admin_executor.h"
#include "service/predictor.h"
#include "service/servable_manager.h"
#include "service/unary_call.h"

namespace normserve {

namespace internal {
using V1 = normserve::v1::InferenceService;
using RawInferenceService = V1::WithRawCallbackMethod_Predict<
    V1::WithRawCallbackMethod_GetModelMetadata<V1::WithRawCallbackMethod_ListModels<
        V1::WithRawCallbackMethod_LoadModel<V1::WithRawCallbackMethod_UnloadModel<
            V1::WithRawCallbackMethod_ReloadModel<V1::Service>>>>>>;
}  // namespace internal

class InferenceServiceImpl final : public internal::RawInferenceService {
 public:
  // All must outlive the service.
  InferenceServiceImpl(Predictor* predictor, ServableManager* manager, AdminExecutor* admin)
      : predictor_(predictor), manager_(manager), admin_(admin) {}

  grpc::ServerUnaryReactor* Predict(grpc::CallbackServerContext* context,
                                    const grpc::ByteBuffer* request,
                                    grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetModelMetadata(grpc::CallbackServerContext* context,
                                             const grpc::ByteBuffer* request,
                                             grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* LoadModel(grpc::CallbackServerContext* context,
                                      const grpc::ByteBuffer* request,
                                      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* UnloadModel(grpc::CallbackServerContext* context,
                                        const grpc::ByteBuffer* request,
                                        grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ReloadModel(grpc::CallbackServerContext* context,
                                        const grpc::ByteBuffer* request,
                                        grpc::ByteBuffer* response) override;

 private:
  using PredictRpc = UnaryCall<v1::PredictRequest, v1::PredictResponse>;
  using MetadataRpc = UnaryCall<v1::GetModelMetadataRequest, v1::GetModelMetadataResponse>;
  using ListRpc = UnaryCall<v1::ListModelsRequest, v1::ListModelsResponse>;
  using LoadRpc = UnaryCall<v1::LoadModelRequest, v1::LoadModelResponse>;
  using UnloadRpc = UnaryCall<v1::UnloadModelRequest, v1::UnloadModelResponse>;
  using ReloadRpc = UnaryCall<v1::ReloadModelRequest, v1::ReloadModelResponse>;

  void HandlePredict(grpc::CallbackServerContext* context, PredictRpc* rpc);
  void HandleGetModelMetadata(MetadataRpc* call);
  void HandleListModels(ListRpc* call);
  void HandleLoadModel(LoadRpc* call);
  void HandleUnloadModel(UnloadRpc* call);
  void HandleReloadModel(ReloadRpc* call);

  Predictor* const predictor_;
  ServableManager* const manager_;
  AdminExecutor* const admin_;
};

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_INFERENCE_SERVICE_H_
