// The validation half shared by the request fuzzers (normserve.v1 Predict, KServe v2
// ModelInfer): both decode into a PredictCall, then run it through the same checks every
// request passes before anything is queued, against one fixed signature.
#ifndef NORMSERVE_FUZZ_REQUEST_VALIDATION_TARGET_H_
#define NORMSERVE_FUZZ_REQUEST_VALIDATION_TARGET_H_

#include <vector>

#include "service/predictor.h"
#include "service/request_validation.h"

namespace normserve {

// An NCHW input with a dynamic batch and a second fixed-shape input, so the validator's
// name lookup, rank, dims and size checks are all reachable.
inline const std::vector<ValueSpec>& FuzzSignatureInputs() {
  static const auto* inputs = new std::vector<ValueSpec>{
      {"input", ElementType::kFloat32, {-1, 3, 4, 4}},
      {"aux", ElementType::kFloat32, {2}},
  };
  return *inputs;
}

inline const std::vector<ValueSpec>& FuzzSignatureOutputs() {
  static const auto* outputs = new std::vector<ValueSpec>{
      {"logits", ElementType::kFloat32, {-1, 10}},
      {"features", ElementType::kFloat32, {-1, 8}},
  };
  return *outputs;
}

// Errors are the expected outcome for most inputs; only crashes and sanitizer reports count.
inline void ValidateDecodedCall(const PredictCall& call) {
  ValidationOptions options;
  options.max_batch = 4;
  (void)ValidateInputs(FuzzSignatureInputs(), call.inputs, options);
  options.allow_non_finite = true;
  (void)ValidateInputs(FuzzSignatureInputs(), call.inputs, options);
  (void)ResolveRequestedOutputs(FuzzSignatureOutputs(), call.outputs);
}

}  // namespace normserve

#endif  // NORMSERVE_FUZZ_REQUEST_VALIDATION_TARGET_H_
