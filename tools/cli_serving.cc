// normserve-cli's serving subcommands: each is one RPC and a printout.
#include "tools/cli_serving.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <numeric>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tools/input_file.h"

namespace normserve::cli {
namespace {

std::string Shape(const google::protobuf::RepeatedField<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

absl::StatusOr<std::unique_ptr<v1::InferenceService::Stub>> InferenceStub(
    const CliOptions& options) {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = Connect(options, options.server);
  if (!channel.ok()) return channel.status();
  return v1::InferenceService::NewStub(*channel);
}

}  // namespace

absl::StatusOr<v1::GetModelMetadataResponse> FetchMetadata(const CliOptions& options,
                                                           const std::string& model,
                                                           int64_t version) {
  absl::StatusOr<std::unique_ptr<v1::InferenceService::Stub>> stub = InferenceStub(options);
  if (!stub.ok()) return stub.status();
  grpc::ClientContext ctx;
  SetDeadline(options, &ctx);
  v1::GetModelMetadataRequest req;
  req.mutable_model_spec()->set_name(model);
  req.mutable_model_spec()->set_version(version);
  v1::GetModelMetadataResponse resp;
  grpc::Status s = (*stub)->GetModelMetadata(&ctx, req, &resp);
  if (!s.ok()) return FromGrpc(s);
  return resp;
}

int Health(const CliOptions& options, const std::vector<std::string>& args) {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = Connect(options, options.server);
  if (!channel.ok()) return Fail(channel.status());
  auto stub = grpc::health::v1::Health::NewStub(*channel);
  grpc::ClientContext ctx;
  SetDeadline(options, &ctx);
  grpc::health::v1::HealthCheckRequest req;
  if (args.size() > 1) req.set_service(args[1]);
  grpc::health::v1::HealthCheckResponse resp;
  grpc::Status s = stub->Check(&ctx, req, &resp);
  if (!s.ok()) return Fail(s);
  const std::string what = req.service().empty() ? "server" : req.service();
  std::cout << what << ": "
            << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status()) << "\n";
  return resp.status() == grpc::health::v1::HealthCheckResponse::SERVING ? kExitOk
                                                                         : kExitNotServing;
}

int List(const CliOptions& options) {
  absl::StatusOr<std::unique_ptr<v1::InferenceService::Stub>> stub = InferenceStub(options);
  if (!stub.ok()) return Fail(stub.status());
  grpc::ClientContext ctx;
  SetDeadline(options, &ctx);
  v1::ListModelsResponse resp;
  grpc::Status s = (*stub)->ListModels(&ctx, {}, &resp);
  if (!s.ok()) return Fail(s);
  for (const v1::ModelStatus& m : resp.models()) {
    std::cout << m.name() << "\tversions "
              << (m.versions().empty() ? std::string("-") : absl::StrJoin(m.versions(), ","));
    if (!m.last_error().empty()) std::cout << "\tlast error: " << m.last_error();
    std::cout << "\n";
  }
  return kExitOk;
}

int Metadata(const CliOptions& options, const std::vector<std::string>& args) {
  absl::StatusOr<v1::GetModelMetadataResponse> md =
      FetchMetadata(options, args[1], options.version);
  if (!md.ok()) return Fail(md.status());
  std::cout << "model " << md->model_spec().name() << " version " << md->model_spec().version()
            << " (serving: " << absl::StrJoin(md->available_versions(), ",") << ")\n"
            << "opset " << md->opset() << ", max batch " << md->max_batch() << ", "
            << md->flops_per_sample() / 1e6 << " MFLOP per sample\n";
  for (const v1::TensorSpec& t : md->inputs()) {
    std::cout << "input  " << t.name() << " " << v1::DataType_Name(t.dtype()) << " "
              << Shape(t.shape()) << "\n";
  }
  for (const v1::TensorSpec& t : md->outputs()) {
    std::cout << "output " << t.name() << " " << v1::DataType_Name(t.dtype()) << " "
              << Shape(t.shape()) << "\n";
  }
  if (md->has_preprocess()) {
    const v1::Preprocess& p = md->preprocess();
    std::cout << "image preprocessing: resize shorter side " << p.resize_shorter_side()
              << ", centre crop [" << absl::StrJoin(p.center_crop(), ",") << "], "
              << (p.channel_order().empty() ? "RGB" : p.channel_order()) << ", mean ["
              << absl::StrJoin(p.mean(), ",") << "], std [" << absl::StrJoin(p.std(), ",") << "]\n";
  }
  std::cout << md->bn_layers_size() << " BatchNormalization layer(s); values per channel in "
            << "one batch-1 request:\n";
  for (const v1::BnLayer& bn : md->bn_layers()) {
    std::cout << "  " << bn.name() << "\tC=" << bn.channels() << "\t" << bn.values_per_channel()
              << "\t" << ReliabilityName(bn.reliability()) << "\n";
  }
  return kExitOk;
}

int Predict(const CliOptions& options, const PredictOptions& predict,
            const std::vector<std::string>& args) {
  const std::string model = args[1];
  if (predict.input.empty()) {
    std::cerr << "predict needs --input=FILE\n";
    return kExitUsage;
  }
  absl::StatusOr<v1::GetModelMetadataResponse> md = FetchMetadata(options, model, options.version);
  if (!md.ok()) return Fail(md.status());
  absl::StatusOr<InputSpec> spec = InputSpecFromMetadata(*md, options.preprocess);
  if (!spec.ok()) return Fail(spec.status());
  if (!predict.raw_shape.empty()) {
    for (absl::string_view d : absl::StrSplit(predict.raw_shape, ',')) {
      int64_t v = 0;
      if (!absl::SimpleAtoi(d, &v)) {
        return Fail(absl::InvalidArgumentError(
            absl::StrCat("--shape=", predict.raw_shape.substr(0, 64), ": not a number list")));
      }
      spec->raw_shape.push_back(v);
    }
  }
  absl::StatusOr<std::string> bytes = ReadFileBytes(predict.input);
  if (!bytes.ok()) return Fail(bytes.status());
  absl::StatusOr<Tensor> input = InputFromBytes(*bytes, predict.input, *spec);
  if (!input.ok()) return Fail(input.status());

  v1::PredictRequest req;
  req.mutable_model_spec()->set_name(model);
  req.mutable_model_spec()->set_version(options.version);
  v1::Tensor* t = req.add_inputs();
  t->set_name(md->inputs(0).name());
  t->set_dtype(v1::DATA_TYPE_FP32);
  for (int64_t d : input->shape) t->add_shape(d);
  t->mutable_raw_data()->assign(reinterpret_cast<const char*>(input->data.data()),
                                input->data.size() * sizeof(float));
  absl::StatusOr<std::unique_ptr<v1::InferenceService::Stub>> stub = InferenceStub(options);
  if (!stub.ok()) return Fail(stub.status());
  grpc::ClientContext ctx;
  SetDeadline(options, &ctx);
  v1::PredictResponse resp;
  grpc::Status s = (*stub)->Predict(&ctx, req, &resp);
  if (!s.ok()) return Fail(s);

  std::cout << "model " << resp.model_spec().name() << " version " << resp.model_spec().version()
            << "\n";
  for (const v1::Tensor& out : resp.outputs()) {
    std::vector<float> values(out.raw_data().size() / sizeof(float));
    std::memcpy(values.data(), out.raw_data().data(), values.size() * sizeof(float));
    std::cout << "output " << out.name() << " " << Shape(out.shape()) << "\n";
    const int64_t rows = out.shape_size() > 0 ? std::max<int64_t>(1, out.shape(0)) : 1;
    const int64_t per_row = static_cast<int64_t>(values.size()) / rows;
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<int64_t> order(per_row);
      std::iota(order.begin(), order.end(), 0);
      const int64_t k = std::min<int64_t>(predict.top, per_row);
      std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int64_t a, int64_t b) {
        return values[r * per_row + a] > values[r * per_row + b];
      });
      if (rows > 1) std::cout << " row " << r << "\n";
      for (int64_t i = 0; i < k; ++i) {
        const int64_t idx = order[i];
        std::cout << "  " << idx;
        if (idx < md->labels_size()) std::cout << " (" << md->labels(idx) << ")";
        std::cout << "\t" << absl::StrFormat("%.6g", values[r * per_row + idx]) << "\n";
      }
    }
  }
  return kExitOk;
}

int Admin(const CliOptions& options, const std::vector<std::string>& args) {
  absl::StatusOr<std::unique_ptr<v1::InferenceService::Stub>> stub = InferenceStub(options);
  if (!stub.ok()) return Fail(stub.status());
  grpc::ClientContext ctx;
  SetDeadline(options, &ctx);
  const std::string name = args.size() > 1 ? args[1] : "";
  grpc::Status s;
  if (args[0] == "load") {
    v1::LoadModelRequest req;
    req.set_name(name);
    v1::LoadModelResponse resp;
    s = (*stub)->LoadModel(&ctx, req, &resp);
    if (s.ok()) {
      std::cout << "loaded " << name << " versions " << absl::StrJoin(resp.status().versions(), ",")
                << "\n";
    }
  } else if (args[0] == "unload") {
    v1::UnloadModelRequest req;
    req.set_name(name);
    v1::UnloadModelResponse resp;
    s = (*stub)->UnloadModel(&ctx, req, &resp);
    if (s.ok()) std::cout << "unloaded " << name << "\n";
  } else {
    v1::ReloadModelRequest req;
    req.set_name(name);
    v1::ReloadModelResponse resp;
    s = (*stub)->ReloadModel(&ctx, req, &resp);
    for (const v1::ModelStatus& m : resp.models()) {
      std::cout << m.name() << "\tversions " << absl::StrJoin(m.versions(), ",") << "\n";
    }
  }
  return Fail(s);
}

}  // namespace normserve::cli
