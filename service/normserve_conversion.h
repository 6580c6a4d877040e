// normserve.v1 messages <-> the service's domain types.
#ifndef NORMSERVE_SERVICE_NORMSERVE_CONVERSION_H_
#define NORMSERVE_SERVICE_NORMSERVE_CONVERSION_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "normserve/v1/inference.pb.h"
#include "service/predictor.h"
#include "service/servable.h"
#include "service/servable_manager.h"

namespace normserve {

// The KServe datatype name of `dtype` ("FP32", ...); "" for DATA_TYPE_UNSPECIFIED.
const char* DataTypeName(normserve::v1::DataType dtype);

// A request tensor that borrows from `tensor`, which must outlive it.
RequestTensor ProtoToRequestTensor(const normserve::v1::Tensor& tensor);

// The call for `request`; its RequestTensors borrow from `request`. INVALID_ARGUMENT for
// enum values this server does not know (an input's dtype, the output_encoding): proto3
// keeps unknown enum numbers, and they must not pass as a default.
absl::StatusOr<PredictCall> ProtoToPredictCall(const normserve::v1::PredictRequest& request);

void PredictResultToProto(const normserve::v1::PredictRequest& request, const PredictResult& result,
                          normserve::v1::PredictResponse* response);

normserve::v1::BnReliability ToReliability(BnReliability r);
void BnLayerToProto(const BnLayerInfo& info, normserve::v1::BnLayer* out);

void ServableToMetadata(const Servable& servable, const std::vector<int64_t>& versions,
                        normserve::v1::GetModelMetadataResponse* response);

void StatusInfoToProto(const ModelStatusInfo& info, normserve::v1::ModelStatus* out);

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_NORMSERVE_CONVERSION_H_
