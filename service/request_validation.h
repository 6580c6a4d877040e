// Checks a client's input tensors against a model's signature before any work is queued:
// names, datatype, rank, dims (-1 = any), element-count overflow, payload size, and
// non-finite values. Every message names the tensor and the limit it broke.
#ifndef NORMSERVE_SERVICE_REQUEST_VALIDATION_H_
#define NORMSERVE_SERVICE_REQUEST_VALIDATION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "kernels/graph.h"
#include "kernels/tensor.h"

namespace normserve {

// One input tensor as the client sent it, protocol-independent. The views borrow from
// the request message, which outlives validation.
struct RequestTensor {
  std::string name;
  // KServe v2 datatype names: "FP32", "FP16", "INT64", ...
  std::string datatype;
  std::vector<int64_t> shape;
  // Raw little-endian row-major bytes, when the client used the raw encoding.
  bool has_raw = false;
  absl::string_view raw;
  // Typed FP32 values, when the client used the typed encoding.
  absl::Span<const float> fp32_values;
  // Typed values of any other type the client sent (only to report the mismatch).
  int64_t other_typed_values = 0;
};

struct ValidationOptions {
  // NaN and +-Inf poison every BN statistic they touch: refused unless allowed.
  bool allow_non_finite = false;
  // Largest batch (dim 0) accepted.
  int64_t max_batch = 64;
  // Largest value of a dynamic dim other than the batch (an image side, say).
  int64_t max_dynamic_dim = 4096;
};

// The validated inputs as float32 tensors in the model's input order (copied out of the
// request: raw bytes in a protobuf string carry no alignment guarantee).
absl::StatusOr<std::vector<Tensor>> ValidateInputs(absl::Span<const ValueSpec> model_inputs,
                                                   absl::Span<const RequestTensor> tensors,
                                                   const ValidationOptions& options);

// Indices into `model_outputs` of the requested output names, in request order; every
// output, in model order, when `requested` is empty. Unknown or repeated names are errors.
absl::StatusOr<std::vector<int>> ResolveRequestedOutputs(absl::Span<const ValueSpec> model_outputs,
                                                         absl::Span<const std::string> requested);

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_REQUEST_VALIDATION_H_
