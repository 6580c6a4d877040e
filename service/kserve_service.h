// gRPC adapter for the KServe v2 GRPCInferenceService (callback API).
#ifndef NORMSERVE_SERVICE_KSERVE_SERVICE_H_
#define NORMSERVE_SERVICE_KSERVE_SERVICE_H_

#include <string>

#include "kserve/grpc_predict_v2.grpc.pb.h"
#include "service/predictor.h"
#include "service/servable_manager.h"

namespace normserve {

class KServeServiceImpl final : public inference::GRPCInferenceService::CallbackService {
 public:
  // Both must outlive the service.
  KServeServiceImpl(Predictor* predictor, const ServableManager* manager,
                    std::string server_version)
      : predictor_(predictor), manager_(manager), server_version_(std::move(server_version)) {}

  grpc::ServerUnaryReactor* ServerLive(grpc::CallbackServerContext* context,
                                       const inference::ServerLiveRequest* request,
                                       inference::ServerLiveResponse* response) override;
  grpc::ServerUnaryReactor* ServerReady(grpc::CallbackServerContext* context,
                                        const inference::ServerReadyRequest* request,
                                        inference::ServerReadyResponse* response) override;
  grpc::ServerUnaryReactor* ModelReady(grpc::CallbackServerContext* context,
                                       const inference::ModelReadyRequest* request,
                                       inference::ModelReadyResponse* response) override;
  grpc::ServerUnaryReactor* ServerMetadata(grpc::CallbackServerContext* context,
                                           const inference::ServerMetadataRequest* request,
                                           inference::ServerMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelMetadata(grpc::CallbackServerContext* context,
                                          const inference::ModelMetadataRequest* request,
                                          inference::ModelMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelInfer(grpc::CallbackServerContext* context,
                                       const inference::ModelInferRequest* request,
                                       inference::ModelInferResponse* response) override;

 private:
  Predictor* const predictor_;
  const ServableManager* const manager_;
  const std::string server_version_;
};

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_KSERVE_SERVICE_H_
