// libFuzzer target: normserve.v1 PredictRequest bytes -> decode -> domain call -> validation
// against a fixed signature, the path every Predict takes before anything is queued.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "normserve/v1/inference.pb.h"
#include "service/normserve_conversion.h"
#include "service/request_validation.h"

namespace normserve {
namespace {

// An NCHW input with a dynamic batch and a second fixed-shape input, so the validator's
// name lookup, rank, dims and size checks are all reachable.
const std::vector<ValueSpec>& Inputs() {
  static const auto* inputs = new std::vector<ValueSpec>{
      {"input", ElementType::kFloat32, {-1, 3, 4, 4}},
      {"aux", ElementType::kFloat32, {2}},
  };
  return *inputs;
}

const std::vector<ValueSpec>& Outputs() {
  static const auto* outputs = new std::vector<ValueSpec>{
      {"logits", ElementType::kFloat32, {-1, 10}},
      {"features", ElementType::kFloat32, {-1, 8}},
  };
  return *outputs;
}

}  // namespace
}  // namespace normserve

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  normserve::v1::PredictRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  absl::StatusOr<normserve::PredictCall> decoded = normserve::ProtoToPredictCall(request);
  if (!decoded.ok()) return 0;  // refused before validation (bad enum)
  const normserve::PredictCall& call = *decoded;
  normserve::ValidationOptions options;
  options.max_batch = 4;
  (void)normserve::ValidateInputs(normserve::Inputs(), call.inputs, options);
  options.allow_non_finite = true;
  (void)normserve::ValidateInputs(normserve::Inputs(), call.inputs, options);
  (void)normserve::ResolveRequestedOutputs(normserve::Outputs(), call.outputs);
  return 0;
}
