// Int8 quantization of a commit's model on the session's samples, and its quality gate.
#include "service/training/int8_commit.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/engine.h"
#include "kernels/int8_quantization.h"
#include "kernels/precision.h"
#include "kernels/status_macros.h"

namespace normserve {
namespace {

// Row-by-row outputs (batch 1, as serving runs them) of `model` on every row of `inputs`.
absl::StatusOr<std::vector<std::vector<float>>> RunRows(std::shared_ptr<const Model> model,
                                                        absl::Span<const Tensor* const> inputs,
                                                        Precision precision, int threads) {
  CompileOptions options;
  options.intra_op_threads = threads;
  options.precision = precision;
  ASSIGN_OR_RETURN(std::shared_ptr<const CompiledModel> compiled,
                   CompiledModel::Compile(std::move(model), options));
  std::unique_ptr<ExecutionContext> context = compiled->NewContext();
  std::vector<std::vector<float>> rows;
  for (const Tensor* input : inputs) {
    const Tensor& t = *input;
    const int64_t batch = t.shape.empty() ? 1 : t.shape[0];
    const size_t per = batch > 0 ? t.data.size() / static_cast<size_t>(batch) : 0;
    std::vector<int64_t> shape = t.shape;
    if (!shape.empty()) shape[0] = 1;
    for (int64_t i = 0; i < batch; ++i) {
      std::vector<Tensor> out;
      RETURN_IF_ERROR(context->Run({TensorView{t.data.data() + i * per, shape}}, &out));
      rows.push_back(std::move(out[0].data));
    }
  }
  return rows;
}

}  // namespace

absl::StatusOr<Int8Commit> QuantizeForCommit(std::shared_ptr<const Model> float_model,
                                             absl::Span<const Tensor> samples,
                                             const Int8GateOptions& options) {
  if (samples.size() < 2) {
    return absl::FailedPreconditionError(absl::StrCat(
        "an int8 commit needs at least 2 kept requests (one to calibrate on, one held out to "
        "measure against fp32); the session has ",
        samples.size()));
  }
  // Before the calibration passes, which run in float32 and would be wasted.
  RETURN_IF_ERROR(CheckPrecisionSupported(Precision::kInt8, dnnl::get_effective_cpu_isa()));
  const int every = std::max(2, options.holdout_every);
  // By pointer: a session keeps up to --training_max_samples inputs, not worth a copy.
  std::vector<const Tensor*> calibration, held_out;
  for (size_t i = 0; i < samples.size(); ++i) {
    ((i + 1) % every == 0 ? held_out : calibration).push_back(&samples[i]);
  }
  if (held_out.empty()) {  // fewer requests than `every`: the last one is held out
    held_out.push_back(calibration.back());
    calibration.pop_back();
  }
  const int64_t n = static_cast<int64_t>(calibration.size());
  const int64_t m = std::max<int64_t>(1, options.max_calibration_requests);
  if (n > m) {
    std::vector<const Tensor*> spaced;
    for (int64_t k = 0; k < m; ++k) spaced.push_back(calibration[(2 * k + 1) * n / (2 * m)]);
    calibration = std::move(spaced);
  }
  Int8QuantizationOptions quantization;
  quantization.intra_op_threads = options.intra_op_threads;
  ASSIGN_OR_RETURN(Int8QuantizationResult quantized,
                   QuantizeInt8(float_model, calibration, quantization));
  ASSIGN_OR_RETURN(std::shared_ptr<const Model> qdq, Model::LoadBytes(quantized.qdq_onnx));
  ASSIGN_OR_RETURN(std::vector<std::vector<float>> int8_rows,
                   RunRows(qdq, held_out, Precision::kInt8, options.intra_op_threads));
  ASSIGN_OR_RETURN(std::vector<std::vector<float>> fp32_rows,
                   RunRows(float_model, held_out, Precision::kFp32, options.intra_op_threads));

  Int8Commit commit;
  Int8Quality& q = commit.quality;
  for (const Tensor* t : calibration) q.calibration_samples += t->shape.empty() ? 1 : t->shape[0];
  q.held_out_samples = static_cast<int64_t>(fp32_rows.size());
  q.quantized_layers = quantized.quantized_layers;
  int64_t agree = 0;
  for (size_t r = 0; r < fp32_rows.size(); ++r) {
    const std::vector<float>& f = fp32_rows[r];
    const std::vector<float>& x = int8_rows[r];
    double scale = 0, err = 0;
    for (size_t c = 0; c < f.size(); ++c) {
      scale = std::max(scale, std::fabs(static_cast<double>(f[c])));
      err = std::max(err, std::fabs(static_cast<double>(x[c]) - f[c]));
    }
    // A row of zeros has no scale: any difference is total.
    q.max_relative_logit_error =
        std::max(q.max_relative_logit_error, scale > 0 ? err / scale : (err > 0 ? 1.0 : 0.0));
    agree += std::max_element(f.begin(), f.end()) - f.begin() ==
             std::max_element(x.begin(), x.end()) - x.begin();
  }
  q.top1_agreement = static_cast<double>(agree) / static_cast<double>(fp32_rows.size());
  q.gate = options;
  q.gate_passed = q.top1_agreement >= options.min_top1_agreement &&
                  q.max_relative_logit_error <= options.max_relative_logit_error;
  commit.qdq_onnx = std::move(quantized.qdq_onnx);
  return commit;
}

std::string Int8GateFailures(const Int8Quality& quality, const Int8GateOptions& options) {
  std::vector<std::string> failures;
  if (quality.top1_agreement < options.min_top1_agreement) {
    failures.push_back(absl::StrCat("int8 top-1 agreement with fp32 ", quality.top1_agreement,
                                    " < ", options.min_top1_agreement, " on ",
                                    quality.held_out_samples, " held-out samples"));
  }
  if (quality.max_relative_logit_error > options.max_relative_logit_error) {
    failures.push_back(absl::StrCat("int8 max relative logit error ",
                                    quality.max_relative_logit_error, " > ",
                                    options.max_relative_logit_error));
  }
  return absl::StrJoin(failures, "; ");
}

}  // namespace normserve
