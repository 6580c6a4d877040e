// The int8 step of a training commit (issue 10): the activation scales are recomputed on
// the session's kept samples after its new BN statistics, so a distribution shift never
// leaves an int8 version on stale scales, and the result is measured against the float
// model on kept samples the calibration did not see before it may be published.
#ifndef NORMSERVE_SERVICE_TRAINING_INT8_COMMIT_H_
#define NORMSERVE_SERVICE_TRAINING_INT8_COMMIT_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/model.h"
#include "kernels/tensor.h"

namespace normserve {

struct Int8GateOptions {
  // Held-out samples whose int8 top-1 class must equal the float model's.
  double min_top1_agreement = 0.98;
  // Largest max_c |int8_c - fp32_c| / max_c |fp32_c| over the held-out samples.
  double max_relative_logit_error = 0.25;
  // Every holdout_every-th kept request (in accept order) is held out of the calibration.
  int holdout_every = 5;
  // Of the other kept requests at most this many calibrate, evenly spaced in accept order
  // (the k-th of m taken from n is number floor((2k + 1) n / 2m)). The calibration holds
  // every request's activations at once (at its peak 2.4 MB a 224x224 request for
  // ResNet-18, 6.0 MB for MobileNetV2) against a 2 GiB limit, so without a cap a
  // 4096-request session could not be committed as int8.
  int64_t max_calibration_requests = 256;
  int intra_op_threads = 1;
};

struct Int8Quality {
  int64_t calibration_samples = 0;  // rows the scales were computed from
  int64_t held_out_samples = 0;     // rows the gate measured
  int quantized_layers = 0;
  double top1_agreement = 0;
  double max_relative_logit_error = 0;
  bool gate_passed = false;
  Int8GateOptions gate;  // the thresholds applied
};

struct Int8Commit {
  std::string qdq_onnx;  // the version's model.onnx
  Int8Quality quality;
};

// Quantizes `float_model` (the commit's model, BN statistics already new) with layer-wise
// MSE-optimal scales (kernels/int8_quantization.h) from the kept requests that are not held
// out (at most max_calibration_requests of them), then runs the held-out ones through both the int8
// and the fp32 plan. `samples`: one tensor per kept request, in accept order. FAILED_PRECONDITION
// below 2 requests (nothing to hold out) or on a CPU without int8 instructions.
absl::StatusOr<Int8Commit> QuantizeForCommit(std::shared_ptr<const Model> float_model,
                                             absl::Span<const Tensor> samples,
                                             const Int8GateOptions& options);

// "top-1 agreement 0.95 < 0.98; ..." for every threshold `quality` misses.
std::string Int8GateFailures(const Int8Quality& quality, const Int8GateOptions& options);

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_TRAINING_INT8_COMMIT_H_
