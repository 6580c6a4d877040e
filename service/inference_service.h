// gRPC adapter for normserve.v1.InferenceService (callback API): decode, one domain call,
// encode. Loads and reloads run on the admin executor, never on a gRPC thread.
#ifndef NORMSERVE_SERVICE_INFERENCE_SERVICE_H_
#define NORMSERVE_SERVICE_INFERENCE_SERVICE_H_

#include "normserve/v1/inference.grpc.pb.h"
#include "service/admin_executor.h"
#include "service/predictor.h"
#include "service/servable_manager.h"

namespace normserve {

class InferenceServiceImpl final : public normserve::v1::InferenceService::CallbackService {
 public:
  // All must outlive the service.
  InferenceServiceImpl(Predictor* predictor, ServableManager* manager, AdminExecutor* admin)
      : predictor_(predictor), manager_(manager), admin_(admin) {}

  grpc::ServerUnaryReactor* Predict(grpc::CallbackServerContext* context,
                                    const normserve::v1::PredictRequest* request,
                                    normserve::v1::PredictResponse* response) override;
  grpc::ServerUnaryReactor* GetModelMetadata(
      grpc::CallbackServerContext* context, const normserve::v1::GetModelMetadataRequest* request,
      normserve::v1::GetModelMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const normserve::v1::ListModelsRequest* request,
                                       normserve::v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* LoadModel(grpc::CallbackServerContext* context,
                                      const normserve::v1::LoadModelRequest* request,
                                      normserve::v1::LoadModelResponse* response) override;
  grpc::ServerUnaryReactor* UnloadModel(grpc::CallbackServerContext* context,
                                        const normserve::v1::UnloadModelRequest* request,
                                        normserve::v1::UnloadModelResponse* response) override;
  grpc::ServerUnaryReactor* ReloadModel(grpc::CallbackServerContext* context,
                                        const normserve::v1::ReloadModelRequest* request,
                                        normserve::v1::ReloadModelResponse* response) override;

 private:
  Predictor* const predictor_;
  ServableManager* const manager_;
  AdminExecutor* const admin_;
};

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_INFERENCE_SERVICE_H_
