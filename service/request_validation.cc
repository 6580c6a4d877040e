// Input checks run on the gRPC thread, before a request takes a queue slot.
#include "service/request_validation.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "absl/base/config.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/status_macros.h"
#include "service/client_echo.h"

#ifdef ABSL_IS_BIG_ENDIAN
#error "raw tensor payloads are little-endian; a big-endian host needs a byte swap here"
#endif

namespace normserve {
namespace {

constexpr int64_t kFp32Bytes = 4;

std::string ModelShapeString(const ValueSpec& spec) { return ShapeToString(spec.shape); }

// "[0,1,5,7]" for a flat row-major index: easier to find in an image than 1234.
std::string MultiIndex(int64_t flat, absl::Span<const int64_t> shape) {
  std::vector<int64_t> idx(shape.size());
  for (int i = static_cast<int>(shape.size()) - 1; i >= 0; --i) {
    const int64_t d = shape[i] > 0 ? shape[i] : 1;
    idx[i] = flat % d;
    flat /= d;
  }
  return ShapeToString(idx);
}

// Matches a request tensor to a model input; an empty name is accepted for a
// single-input model (batch-1 clients often do not know the ONNX input name).
absl::StatusOr<std::vector<const RequestTensor*>> MatchInputs(
    absl::Span<const ValueSpec> model_inputs, absl::Span<const RequestTensor> tensors) {
  std::vector<const RequestTensor*> by_input(model_inputs.size(), nullptr);
  std::vector<std::string> expected;
  for (const ValueSpec& spec : model_inputs)
    expected.push_back(absl::StrCat("\"", spec.name, "\""));
  for (const RequestTensor& t : tensors) {
    int match = -1;
    if (t.name.empty() && model_inputs.size() == 1) {
      match = 0;
    } else {
      for (size_t i = 0; i < model_inputs.size(); ++i) {
        if (model_inputs[i].name == t.name) match = static_cast<int>(i);
      }
    }
    if (match < 0) {
      return absl::InvalidArgumentError(absl::StrCat("unknown input \"", Echo(t.name),
                                                     "\"; the model's inputs are ",
                                                     absl::StrJoin(expected, ", ")));
    }
    if (by_input[match] != nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("input \"", model_inputs[match].name, "\" is given more than once"));
    }
    by_input[match] = &t;
  }
  for (size_t i = 0; i < model_inputs.size(); ++i) {
    if (by_input[i] == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "missing input \"", model_inputs[i].name, "\" (shape ", ModelShapeString(model_inputs[i]),
          " FP32); the model's inputs are ", absl::StrJoin(expected, ", ")));
    }
  }
  return by_input;
}

absl::Status CheckShape(const ValueSpec& spec, const RequestTensor& t, int64_t max_batch,
                        int64_t max_dynamic_dim) {
  const std::string& name = spec.name;
  if (t.shape.size() != spec.shape.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input \"", name, "\": expected rank ", spec.shape.size(), " (shape ",
        ModelShapeString(spec), "), got rank ", t.shape.size(), " ", ShapeToString(t.shape)));
  }
  // Before the per-dim comparison so a hostile shape is reported as what it is.
  absl::StatusOr<int64_t> count = ShapeElementCount(t.shape);
  if (!count.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("input \"", name, "\": ", count.status().message()));
  }
  for (size_t d = 0; d < spec.shape.size(); ++d) {
    const int64_t want = spec.shape[d];
    const int64_t got = t.shape[d];
    if (d == 0) {
      if (got < 1 || got > max_batch) {
        return absl::InvalidArgumentError(absl::StrCat("input \"", name, "\": batch size ", got,
                                                       " (dim 0 of ", ShapeToString(t.shape),
                                                       ") is outside [1, ", max_batch, "]"));
      }
      if (want >= 0 && got != want) {
        return absl::InvalidArgumentError(
            absl::StrCat("input \"", name, "\": the model has a fixed batch of ", want, " (shape ",
                         ModelShapeString(spec), "), got ", got));
      }
      continue;
    }
    if (want >= 0 ? got != want : got < 1 || got > max_dynamic_dim) {
      return absl::InvalidArgumentError(
          absl::StrCat("input \"", name, "\": dim ", d, " of ", ShapeToString(t.shape), " is ", got,
                       ", the model expects ",
                       want >= 0 ? absl::StrCat(want)
                                 : absl::StrCat("[1, ", max_dynamic_dim, "] (max_dynamic_dim)"),
                       " (shape ", ModelShapeString(spec), ")"));
    }
  }
  return absl::OkStatus();
}

// Copies the payload into `out` after checking its size against the shape.
absl::Status CopyPayload(const std::string& name, const RequestTensor& t, int64_t count,
                         Tensor* out) {
  const bool has_typed = !t.fp32_values.empty() || t.other_typed_values > 0;
  if (t.has_raw && has_typed) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input \"", name, "\": both raw and typed contents are set; send exactly one"));
  }
  if (count > std::numeric_limits<int64_t>::max() / kFp32Bytes) {
    return absl::InvalidArgumentError(absl::StrCat("input \"", name, "\": shape ",
                                                   ShapeToString(t.shape), " has ", count,
                                                   " elements, more bytes than fit in int64"));
  }
  out->shape = t.shape;
  if (t.has_raw) {
    const int64_t want = count * kFp32Bytes;
    const int64_t got = static_cast<int64_t>(t.raw.size());
    if (got != want) {
      return absl::InvalidArgumentError(absl::StrCat("input \"", name, "\": expected ", want,
                                                     " bytes for shape ", ShapeToString(t.shape),
                                                     " FP32, got ", got));
    }
    out->data.resize(count);
    if (count > 0) std::memcpy(out->data.data(), t.raw.data(), t.raw.size());
    return absl::OkStatus();
  }
  const int64_t got = static_cast<int64_t>(t.fp32_values.size()) + t.other_typed_values;
  if (got != count) {
    return absl::InvalidArgumentError(absl::StrCat("input \"", name, "\": expected ", count,
                                                   " FP32 values for shape ",
                                                   ShapeToString(t.shape), ", got ", got));
  }
  if (t.other_typed_values > 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input \"", name, "\": contents are not in the FP32 field; datatype FP32 expected"));
  }
  out->data.assign(t.fp32_values.begin(), t.fp32_values.end());
  return absl::OkStatus();
}

absl::Status CheckFinite(const std::string& name, const Tensor& t) {
  for (size_t i = 0; i < t.data.size(); ++i) {
    const float v = t.data[i];
    if (!std::isfinite(v)) {
      const char* what = std::isnan(v) ? "NaN" : (v > 0 ? "+Inf" : "-Inf");
      return absl::InvalidArgumentError(absl::StrCat(
          "input \"", name, "\": element ", MultiIndex(static_cast<int64_t>(i), t.shape), " is ",
          what, "; non-finite inputs are refused (allow_non_finite is off)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<Tensor>> ValidateInputs(absl::Span<const ValueSpec> model_inputs,
                                                   absl::Span<const RequestTensor> tensors,
                                                   const ValidationOptions& options) {
  if (tensors.size() != model_inputs.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected ", model_inputs.size(), " input tensor(s), got ", tensors.size()));
  }
  ASSIGN_OR_RETURN(std::vector<const RequestTensor*> matched, MatchInputs(model_inputs, tensors));
  std::vector<Tensor> out(model_inputs.size());
  for (size_t i = 0; i < model_inputs.size(); ++i) {
    const ValueSpec& spec = model_inputs[i];
    const RequestTensor& t = *matched[i];
    if (spec.type != ElementType::kFloat32) {
      return absl::UnimplementedError(absl::StrCat("input \"", spec.name, "\" is ",
                                                   ElementTypeName(spec.type),
                                                   "; only FP32 model inputs are served"));
    }
    if (t.datatype != "FP32") {
      return absl::InvalidArgumentError(
          absl::StrCat("input \"", spec.name, "\": datatype ",
                       t.datatype.empty() ? std::string("(unset)") : t.datatype,
                       " is not accepted; the model expects FP32"));
    }
    RETURN_IF_ERROR(CheckShape(spec, t, options.max_batch, options.max_dynamic_dim));
    if (i > 0 && t.shape[0] != out[0].shape[0]) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input \"", spec.name, "\": batch size ", t.shape[0], " differs from input \"",
          model_inputs[0].name, "\" (", out[0].shape[0], ")"));
    }
    const int64_t count = ShapeElementCount(t.shape).value();  // checked in CheckShape
    RETURN_IF_ERROR(CopyPayload(spec.name, t, count, &out[i]));
    if (!options.allow_non_finite) RETURN_IF_ERROR(CheckFinite(spec.name, out[i]));
  }
  return out;
}

absl::StatusOr<std::vector<int>> ResolveRequestedOutputs(absl::Span<const ValueSpec> model_outputs,
                                                         absl::Span<const std::string> requested) {
  std::vector<int> indices;
  if (requested.empty()) {
    for (size_t i = 0; i < model_outputs.size(); ++i) indices.push_back(static_cast<int>(i));
    return indices;
  }
  absl::flat_hash_set<int> seen;
  for (const std::string& name : requested) {
    int match = -1;
    for (size_t i = 0; i < model_outputs.size(); ++i) {
      if (model_outputs[i].name == name) match = static_cast<int>(i);
    }
    if (match < 0) {
      std::vector<std::string> names;
      for (const ValueSpec& o : model_outputs) names.push_back(absl::StrCat("\"", o.name, "\""));
      return absl::InvalidArgumentError(absl::StrCat("unknown output \"", Echo(name),
                                                     "\"; the model's outputs are ",
                                                     absl::StrJoin(names, ", ")));
    }
    if (!seen.insert(match).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("output \"", name, "\" is requested more than once"));
    }
    indices.push_back(match);
  }
  return indices;
}

}  // namespace normserve
