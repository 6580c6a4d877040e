// KServe v2 decoding and encoding; the handlers only call these.
#include "service/kserve_conversion.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "service/client_echo.h"

namespace normserve {
namespace {

const char* KServeDatatype(ElementType t) {
  switch (t) {
    case ElementType::kFloat32:
      return "FP32";
    case ElementType::kInt64:
      return "INT64";
  }
  return "";
}

int64_t OtherTypedValues(const inference::InferTensorContents& c) {
  return c.bool_contents_size() + c.int_contents_size() + c.int64_contents_size() +
         c.uint_contents_size() + c.uint64_contents_size() + c.fp64_contents_size() +
         c.bytes_contents_size();
}

void FillTensorMetadata(const ValueSpec& spec,
                        inference::ModelMetadataResponse::TensorMetadata* out) {
  out->set_name(spec.name);
  out->set_datatype(KServeDatatype(spec.type));
  for (int64_t d : spec.shape) out->add_shape(d);
}

}  // namespace

absl::StatusOr<int64_t> ParseKServeVersion(const std::string& version, absl::string_view field) {
  if (version.empty()) return 0;
  int64_t v = 0;
  // SimpleAtoi alone takes " 1" and "+1": a version is its decimal digits, nothing else.
  const bool digits =
      std::all_of(version.begin(), version.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (!digits || !absl::SimpleAtoi(version, &v) || v <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, " \"", Echo(version), "\" is not a positive integer (decimal digits only)"));
  }
  return v;
}

absl::StatusOr<PredictCall> KServeToPredictCall(const inference::ModelInferRequest& request) {
  PredictCall call;
  call.model = request.model_name();
  absl::StatusOr<int64_t> version = ParseKServeVersion(request.model_version(), "model_version");
  if (!version.ok()) return version.status();
  call.version = *version;
  const bool raw = request.raw_input_contents_size() > 0;
  if (raw && request.raw_input_contents_size() != request.inputs_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("raw_input_contents has ", request.raw_input_contents_size(), " entries for ",
                     request.inputs_size(), " inputs; send one per input"));
  }
  for (int i = 0; i < request.inputs_size(); ++i) {
    const auto& in = request.inputs(i);
    RequestTensor t;
    t.name = in.name();
    t.datatype = in.datatype();
    t.shape.assign(in.shape().begin(), in.shape().end());
    if (raw) {
      t.has_raw = true;
      t.raw = request.raw_input_contents(i);
    }
    t.fp32_values = absl::MakeConstSpan(in.contents().fp32_contents().data(),
                                        in.contents().fp32_contents_size());
    t.other_typed_values = OtherTypedValues(in.contents());
    call.inputs.push_back(std::move(t));
  }
  for (const auto& out : request.outputs()) call.outputs.push_back(out.name());
  return call;
}

void PredictResultToKServe(const inference::ModelInferRequest& request, const PredictResult& result,
                           inference::ModelInferResponse* response) {
  const bool raw = request.raw_input_contents_size() > 0;
  response->set_model_name(result.servable->name);
  response->set_model_version(absl::StrCat(result.servable->version));
  response->set_id(request.id());
  for (size_t i = 0; i < result.outputs.size(); ++i) {
    const Tensor& t = result.outputs[i];
    auto* out = response->add_outputs();
    out->set_name(result.servable->model().outputs()[result.output_indices[i]].name);
    out->set_datatype("FP32");
    for (int64_t d : t.shape) out->add_shape(d);
    if (raw) {
      std::string* bytes = response->add_raw_output_contents();
      bytes->resize(t.data.size() * sizeof(float));
      if (!t.data.empty()) std::memcpy(bytes->data(), t.data.data(), bytes->size());
    } else {
      out->mutable_contents()->mutable_fp32_contents()->Add(t.data.begin(), t.data.end());
    }
  }
}

void ServableToKServeMetadata(const Servable& servable, const std::vector<int64_t>& versions,
                              inference::ModelMetadataResponse* response) {
  response->set_name(servable.name);
  for (int64_t v : versions) response->add_versions(absl::StrCat(v));
  response->set_platform("normserve_onnx");
  (*response->mutable_parameters())["precision"].set_string_param(servable.precision());
  for (const ValueSpec& in : servable.model().inputs())
    FillTensorMetadata(in, response->add_inputs());
  for (const ValueSpec& out : servable.model().outputs()) {
    FillTensorMetadata(out, response->add_outputs());
  }
}

}  // namespace normserve
