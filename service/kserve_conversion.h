// KServe v2 (Open Inference Protocol) messages <-> the service's domain types.
#ifndef NORMSERVE_SERVICE_KSERVE_CONVERSION_H_
#define NORMSERVE_SERVICE_KSERVE_CONVERSION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kserve/grpc_predict_v2.pb.h"
#include "service/predictor.h"
#include "service/servable.h"

namespace normserve {

// "" -> 0 (latest); otherwise a positive decimal version number, digits only (no sign,
// no blanks). INVALID_ARGUMENT names `field` ("model_version" or "version").
absl::StatusOr<int64_t> ParseKServeVersion(const std::string& version,
                                           absl::string_view field = "version");

// The call for `request`; its RequestTensors borrow from `request`.
absl::StatusOr<PredictCall> KServeToPredictCall(const inference::ModelInferRequest& request);

// Outputs go as raw_output_contents when the request sent raw inputs, else as typed
// fp32_contents: a client gets back the encoding it chose.
void PredictResultToKServe(const inference::ModelInferRequest& request, const PredictResult& result,
                           inference::ModelInferResponse* response);

void ServableToKServeMetadata(const Servable& servable, const std::vector<int64_t>& versions,
                              inference::ModelMetadataResponse* response);

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_KSERVE_CONVERSION_H_
