// gRPC adapter for the KServe v2 GRPCInferenceService (callback API). Methods are
// registered raw so that undecodable bytes get INVALID_ARGUMENT (service/unary_call.h).
#ifndef NORMSERVE_SERVICE_KSERVE_SERVICE_H_
#define NORMSERVE_SERVICE_KSERVE_SERVICE_H_

#include <grpcpp/support/byte_buffer.h>

#include <string>

#include "kserve/grpc_predict_v2.grpc.pb.h"
#include "service/predictor.h"
#include "service/servable_manager.h"
#include "service/unary_call.h"

namespace normserve {

namespace internal {
using KServe = inference::GRPCInferenceService;
using RawKServeService = KServe::WithRawCallbackMethod_ServerLive<
    KServe::WithRawCallbackMethod_ServerReady<KServe::WithRawCallbackMethod_ModelReady<
        KServe::WithRawCallbackMethod_ServerMetadata<KServe::WithRawCallbackMethod_ModelMetadata<
            KServe::WithRawCallbackMethod_ModelInfer<KServe::Service>>>>>>;
}  // namespace internal

class KServeServiceImpl final : public internal::RawKServeService {
 public:
  // Both must outlive the service.
  KServeServiceImpl(Predictor* predictor, const ServableManager* manager,
                    std::string server_version)
      : predictor_(predictor), manager_(manager), server_version_(std::move(server_version)) {}

  grpc::ServerUnaryReactor* ServerLive(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ServerReady(grpc::CallbackServerContext* context,
                                        const grpc::ByteBuffer* request,
                                        grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ModelReady(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ServerMetadata(grpc::CallbackServerContext* context,
                                           const grpc::ByteBuffer* request,
                                           grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ModelMetadata(grpc::CallbackServerContext* context,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ModelInfer(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;

 private:
  using ServerLiveRpc = UnaryCall<inference::ServerLiveRequest, inference::ServerLiveResponse>;
  using ServerReadyRpc = UnaryCall<inference::ServerReadyRequest, inference::ServerReadyResponse>;
  using ModelReadyRpc = UnaryCall<inference::ModelReadyRequest, inference::ModelReadyResponse>;
  using ServerMetadataRpc =
      UnaryCall<inference::ServerMetadataRequest, inference::ServerMetadataResponse>;
  using ModelMetadataRpc =
      UnaryCall<inference::ModelMetadataRequest, inference::ModelMetadataResponse>;
  using ModelInferRpc = UnaryCall<inference::ModelInferRequest, inference::ModelInferResponse>;

  void HandleServerLive(ServerLiveRpc* call);
  void HandleServerReady(ServerReadyRpc* call);
  void HandleModelReady(ModelReadyRpc* call);
  void HandleServerMetadata(ServerMetadataRpc* call);
  void HandleModelMetadata(ModelMetadataRpc* call);
  void HandleModelInfer(grpc::CallbackServerContext* context, ModelInferRpc* rpc);

  Predictor* const predictor_;
  const ServableManager* const manager_;
  const std::string server_version_;
};

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_KSERVE_SERVICE_H_
