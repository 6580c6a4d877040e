// normserve.v1 decoding and encoding; the handlers only call these.
#include "service/normserve_conversion.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "service/client_echo.h"

namespace normserve {
namespace {

namespace v1 = ::normserve::v1;

v1::DataType ToDataType(ElementType t) {
  switch (t) {
    case ElementType::kFloat32:
      return v1::DATA_TYPE_FP32;
    case ElementType::kInt64:
      return v1::DATA_TYPE_INT64;
  }
  return v1::DATA_TYPE_UNSPECIFIED;
}

void FillSpec(const ValueSpec& spec, v1::TensorSpec* out) {
  out->set_name(spec.name);
  out->set_dtype(ToDataType(spec.type));
  for (int64_t d : spec.shape) out->add_shape(d);
}

}  // namespace

const char* DataTypeName(v1::DataType dtype) {
  switch (dtype) {
    case v1::DATA_TYPE_FP32:
      return "FP32";
    case v1::DATA_TYPE_FP16:
      return "FP16";
    case v1::DATA_TYPE_FP64:
      return "FP64";
    case v1::DATA_TYPE_INT32:
      return "INT32";
    case v1::DATA_TYPE_INT64:
      return "INT64";
    case v1::DATA_TYPE_UINT8:
      return "UINT8";
    case v1::DATA_TYPE_BOOL:
      return "BOOL";
    default:
      return "";
  }
}

RequestTensor ProtoToRequestTensor(const v1::Tensor& in) {
  RequestTensor t;
  t.name = in.name();
  // Every caller (Predict, the training endpoint's Accumulate) reports an out-of-range
  // enum as what it is, not as unset.
  t.datatype = v1::DataType_IsValid(in.dtype())
                   ? std::string(DataTypeName(in.dtype()))
                   : absl::StrCat("(unknown dtype ", static_cast<int>(in.dtype()), ")");
  t.shape.assign(in.shape().begin(), in.shape().end());
  t.has_raw = !in.raw_data().empty();
  t.raw = in.raw_data();
  t.fp32_values = absl::MakeConstSpan(in.float_data().data(), in.float_data_size());
  return t;
}

absl::StatusOr<PredictCall> ProtoToPredictCall(const v1::PredictRequest& request) {
  if (!v1::TensorEncoding_IsValid(request.output_encoding())) {
    return absl::InvalidArgumentError(
        absl::StrCat("output_encoding ", static_cast<int>(request.output_encoding()),
                     " is not a TensorEncoding (valid: 0 TENSOR_ENCODING_RAW, 1 "
                     "TENSOR_ENCODING_FLOAT_DATA)"));
  }
  PredictCall call;
  call.model = request.model_spec().name();
  call.version = request.model_spec().version();
  for (const v1::Tensor& in : request.inputs()) {
    if (!v1::DataType_IsValid(in.dtype())) {
      return absl::InvalidArgumentError(
          absl::StrCat("input \"", Echo(in.name()), "\": unknown dtype ",
                       static_cast<int>(in.dtype()), " (not a normserve.v1.DataType)"));
    }
    call.inputs.push_back(ProtoToRequestTensor(in));
  }
  call.outputs.assign(request.output_filter().begin(), request.output_filter().end());
  return call;
}

void PredictResultToProto(const v1::PredictRequest& request, const PredictResult& result,
                          v1::PredictResponse* response) {
  response->mutable_model_spec()->set_name(result.servable->name);
  response->mutable_model_spec()->set_version(result.servable->version);
  for (size_t i = 0; i < result.outputs.size(); ++i) {
    const Tensor& t = result.outputs[i];
    v1::Tensor* out = response->add_outputs();
    out->set_name(result.servable->model().outputs()[result.output_indices[i]].name);
    out->set_dtype(v1::DATA_TYPE_FP32);
    for (int64_t d : t.shape) out->add_shape(d);
    if (request.output_encoding() == v1::TENSOR_ENCODING_FLOAT_DATA) {
      out->mutable_float_data()->Add(t.data.begin(), t.data.end());
    } else {
      std::string* bytes = out->mutable_raw_data();
      bytes->resize(t.data.size() * sizeof(float));
      if (!t.data.empty()) std::memcpy(bytes->data(), t.data.data(), bytes->size());
    }
  }
}

v1::BnReliability ToReliability(BnReliability r) {
  switch (r) {
    case BnReliability::kUndefined:
      return v1::BN_RELIABILITY_UNDEFINED;
    case BnReliability::kUnreliable:
      return v1::BN_RELIABILITY_UNRELIABLE;
    case BnReliability::kFine:
      return v1::BN_RELIABILITY_FINE;
  }
  return v1::BN_RELIABILITY_UNSPECIFIED;
}

void BnLayerToProto(const BnLayerInfo& info, v1::BnLayer* out) {
  out->set_name(info.name);
  out->set_input(info.input);
  out->set_channels(info.channels);
  for (int64_t d : info.input_shape) out->add_input_shape(d);
  out->set_values_per_channel(info.values_per_channel);
  out->set_reliability(ToReliability(info.reliability));
  out->set_topo_index(info.topo_index);
}

void ServableToMetadata(const Servable& servable, const std::vector<int64_t>& versions,
                        v1::GetModelMetadataResponse* response) {
  const Model& model = servable.model();
  response->mutable_model_spec()->set_name(servable.name);
  response->mutable_model_spec()->set_version(servable.version);
  for (int64_t v : versions) response->add_available_versions(v);
  for (const ValueSpec& in : model.inputs()) FillSpec(in, response->add_inputs());
  for (const ValueSpec& out : model.outputs()) FillSpec(out, response->add_outputs());
  for (const BnLayerInfo& bn : model.bn_layers()) BnLayerToProto(bn, response->add_bn_layers());
  response->set_opset(model.opset());
  response->set_flops_per_sample(servable.compiled->FlopsPerSample());
  response->set_max_batch(servable.compiled->options().max_batch);
  for (const std::string& label : servable.config.labels()) response->add_labels(label);
  if (servable.config.has_preprocess())
    *response->mutable_preprocess() = servable.config.preprocess();
  response->set_precision(servable.precision());
}

void StatusInfoToProto(const ModelStatusInfo& info, v1::ModelStatus* out) {
  out->set_name(info.name);
  for (int64_t v : info.versions) out->add_versions(v);
  out->set_last_error(info.last_error);
}

}  // namespace normserve
