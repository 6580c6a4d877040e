// libFuzzer target: normserve.v1 PredictRequest bytes -> decode -> domain call -> validation
// against a fixed signature, the path every Predict takes before anything is queued.
#include <cstddef>
#include <cstdint>

#include "fuzz/request_validation_target.h"
#include "normserve/v1/inference.pb.h"
#include "service/normserve_conversion.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  normserve::v1::PredictRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  absl::StatusOr<normserve::PredictCall> decoded = normserve::ProtoToPredictCall(request);
  if (!decoded.ok()) return 0;  // refused before validation (bad enum)
  normserve::ValidateDecodedCall(*decoded);
  return 0;
}
