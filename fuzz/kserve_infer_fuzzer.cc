// libFuzzer target: KServe v2 ModelInferRequest bytes -> decode -> domain call -> validation
// against a fixed signature, the path every ModelInfer takes before anything is queued.
#include <cstddef>
#include <cstdint>

#include "fuzz/request_validation_target.h"
#include "kserve/grpc_predict_v2.pb.h"
#include "service/kserve_conversion.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  inference::ModelInferRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  absl::StatusOr<normserve::PredictCall> decoded = normserve::KServeToPredictCall(request);
  if (!decoded.ok()) return 0;
  normserve::ValidateDecodedCall(*decoded);
  return 0;
}
