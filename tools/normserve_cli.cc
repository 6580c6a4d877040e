// normserve-cli: a command-line client for normserve's own API (normserve.v1) and the
// standard health service. Flags live here; each subcommand is one RPC and a printout.
//
//   normserve-cli [--server=HOST:PORT] health [MODEL]
//   normserve-cli list
//   normserve-cli metadata MODEL [--version=N]
//   normserve-cli predict MODEL --input=FILE.npy|FILE.raw|IMAGE.pgm|IMAGE.ppm [--top=5]
//   normserve-cli load|unload|reload [MODEL]
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "kernels/npy_io.h"
#include "kernels/tensor.h"
#include "normserve/v1/inference.grpc.pb.h"

ABSL_FLAG(std::string, server, "localhost:8001", "normserve address (host:port).");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA certificate: connect with TLS.");
ABSL_FLAG(int64_t, version, 0, "Model version (0: the latest serving).");
ABSL_FLAG(std::string, input, "", "predict: .npy (float32), .raw (float32 LE), .pgm or .ppm.");
ABSL_FLAG(std::string, shape, "",
          "predict: shape of a .raw input, e.g. 1,3,224,224 (default: the model's, batch 1).");
ABSL_FLAG(int, top, 5, "predict: how many of the largest outputs to print per row.");
ABSL_FLAG(double, timeout_s, 30, "RPC deadline in seconds.");

namespace {

namespace v1 = ::normserve::v1;

std::shared_ptr<grpc::Channel> Connect() {
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  const std::string ca = absl::GetFlag(FLAGS_tls_ca);
  if (!ca.empty()) {
    std::ifstream in(ca);
    std::stringstream pem;
    pem << in.rdbuf();
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = pem.str();
    creds = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  return grpc::CreateCustomChannel(absl::GetFlag(FLAGS_server), creds, args);
}

void SetDeadline(grpc::ClientContext* ctx) {
  ctx->set_deadline(
      std::chrono::system_clock::now() +
      std::chrono::milliseconds(static_cast<int64_t>(absl::GetFlag(FLAGS_timeout_s) * 1000)));
}

// Exit codes: 0 ok, 1 the server said no (its message printed), 2 usage.
int Report(const grpc::Status& s) {
  if (s.ok()) return 0;
  std::cerr << "error: " << s.error_code() << " " << s.error_message() << "\n";
  return 1;
}

int Report(const absl::Status& s) {
  if (s.ok()) return 0;
  std::cerr << "error: " << s.message() << "\n";
  return 1;
}

const char* ReliabilityName(v1::BnReliability r) {
  switch (r) {
    case v1::BN_RELIABILITY_UNDEFINED:
      return "undefined";
    case v1::BN_RELIABILITY_UNRELIABLE:
      return "unreliable";
    case v1::BN_RELIABILITY_FINE:
      return "fine";
    default:
      return "?";
  }
}

std::string Shape(const google::protobuf::RepeatedField<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

int Health(const std::vector<std::string>& args) {
  auto stub = grpc::health::v1::Health::NewStub(Connect());
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  grpc::health::v1::HealthCheckRequest req;
  if (args.size() > 1) req.set_service(args[1]);
  grpc::health::v1::HealthCheckResponse resp;
  grpc::Status s = stub->Check(&ctx, req, &resp);
  if (!s.ok()) return Report(s);
  const std::string what = req.service().empty() ? "server" : req.service();
  std::cout << what << ": "
            << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status()) << "\n";
  return resp.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}

int List() {
  auto stub = v1::InferenceService::NewStub(Connect());
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  v1::ListModelsResponse resp;
  grpc::Status s = stub->ListModels(&ctx, {}, &resp);
  if (!s.ok()) return Report(s);
  for (const v1::ModelStatus& m : resp.models()) {
    std::cout << m.name() << "\tversions "
              << (m.versions().empty() ? std::string("-") : absl::StrJoin(m.versions(), ","));
    if (!m.last_error().empty()) std::cout << "\tlast error: " << m.last_error();
    std::cout << "\n";
  }
  return 0;
}

absl::StatusOr<v1::GetModelMetadataResponse> FetchMetadata(v1::InferenceService::Stub* stub,
                                                           const std::string& model) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  v1::GetModelMetadataRequest req;
  req.mutable_model_spec()->set_name(model);
  req.mutable_model_spec()->set_version(absl::GetFlag(FLAGS_version));
  v1::GetModelMetadataResponse resp;
  grpc::Status s = stub->GetModelMetadata(&ctx, req, &resp);
  if (!s.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
  }
  return resp;
}

int Metadata(const std::vector<std::string>& args) {
  auto stub = v1::InferenceService::NewStub(Connect());
  absl::StatusOr<v1::GetModelMetadataResponse> md = FetchMetadata(stub.get(), args[1]);
  if (!md.ok()) return Report(md.status());
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
  std::cout << md->bn_layers_size() << " BatchNormalization layer(s); values per channel in "
            << "one batch-1 request:\n";
  for (const v1::BnLayer& bn : md->bn_layers()) {
    std::cout << "  " << bn.name() << "\tC=" << bn.channels() << "\t" << bn.values_per_channel()
              << "\t" << ReliabilityName(bn.reliability()) << "\n";
  }
  return 0;
}

absl::StatusOr<std::string> ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot be read"));
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Netpbm P5 (grey) / P6 (RGB), 8 or 16 bit, as [1,C,H,W] in [0,1] (pixel / maxval).
absl::StatusOr<normserve::Tensor> ReadNetpbm(const std::string& path) {
  absl::StatusOr<std::string> bytes = ReadAll(path);
  if (!bytes.ok()) return bytes.status();
  size_t pos = 0;
  auto token = [&]() -> std::string {
    while (pos < bytes->size()) {
      if ((*bytes)[pos] == '#') {
        while (pos < bytes->size() && (*bytes)[pos] != '\n') ++pos;
      } else if (absl::ascii_isspace(static_cast<unsigned char>((*bytes)[pos]))) {
        ++pos;
      } else {
        break;
      }
    }
    const size_t start = pos;
    while (pos < bytes->size() && !absl::ascii_isspace(static_cast<unsigned char>((*bytes)[pos]))) {
      ++pos;
    }
    return bytes->substr(start, pos - start);
  };
  const std::string magic = token();
  if (magic != "P5" && magic != "P6") {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a binary PGM (P5) or PPM (P6) file"));
  }
  int64_t w = 0, h = 0, maxval = 0;
  if (!absl::SimpleAtoi(token(), &w) || !absl::SimpleAtoi(token(), &h) ||
      !absl::SimpleAtoi(token(), &maxval) || w <= 0 || h <= 0 || maxval <= 0 || maxval > 65535 ||
      w > 65536 || h > 65536) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": bad Netpbm header"));
  }
  ++pos;  // the single whitespace after maxval
  const int64_t channels = magic == "P6" ? 3 : 1;
  const int64_t sample_bytes = maxval > 255 ? 2 : 1;
  const int64_t need = w * h * channels * sample_bytes;
  if (static_cast<int64_t>(bytes->size() - std::min(pos, bytes->size())) < need) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", need, " pixel bytes expected"));
  }
  normserve::Tensor t;
  t.shape = {1, channels, h, w};
  t.data.resize(channels * h * w);
  const unsigned char* p = reinterpret_cast<const unsigned char*>(bytes->data() + pos);
  for (int64_t y = 0; y < h; ++y) {
    for (int64_t x = 0; x < w; ++x) {
      for (int64_t c = 0; c < channels; ++c) {
        const int64_t i = ((y * w + x) * channels + c) * sample_bytes;
        // Netpbm stores 16-bit samples big-endian.
        const int v = sample_bytes == 2 ? (p[i] << 8) | p[i + 1] : p[i];
        t.data[(c * h + y) * w + x] = static_cast<float>(v) / static_cast<float>(maxval);
      }
    }
  }
  return t;
}

// Fits an image tensor to the model input [.., C, H, W]: grey to RGB by replication; the
// spatial size must match (no resampling: a silent resize would hide a wrong input).
absl::StatusOr<normserve::Tensor> FitImage(normserve::Tensor img, const v1::TensorSpec& spec) {
  if (spec.shape_size() != 4) {
    return absl::InvalidArgumentError(absl::StrCat("the model input ", spec.name(), " ",
                                                   Shape(spec.shape()), " is not an image"));
  }
  const int64_t c = spec.shape(1), h = spec.shape(2), w = spec.shape(3);
  if ((h > 0 && img.shape[2] != h) || (w > 0 && img.shape[3] != w)) {
    return absl::InvalidArgumentError(absl::StrCat("image is ", img.shape[3], "x", img.shape[2],
                                                   ", the model expects ", w, "x", h));
  }
  if (c == 3 && img.shape[1] == 1) {
    const size_t plane = img.data.size();
    img.data.resize(3 * plane);
    std::copy_n(img.data.begin(), plane, img.data.begin() + plane);
    std::copy_n(img.data.begin(), plane, img.data.begin() + 2 * plane);
    img.shape[1] = 3;
  } else if (c > 0 && img.shape[1] != c) {
    return absl::InvalidArgumentError(
        absl::StrCat("image has ", img.shape[1], " channel(s), the model expects ", c));
  }
  return img;
}

absl::StatusOr<normserve::Tensor> LoadInput(const std::string& path, const v1::TensorSpec& spec) {
  const std::string lower = absl::AsciiStrToLower(path);
  if (absl::EndsWith(lower, ".npy")) return normserve::ReadNpyFile(path);
  if (absl::EndsWith(lower, ".pgm") || absl::EndsWith(lower, ".ppm")) {
    absl::StatusOr<normserve::Tensor> img = ReadNetpbm(path);
    if (!img.ok()) return img.status();
    return FitImage(*std::move(img), spec);
  }
  if (absl::EndsWith(lower, ".raw") || absl::EndsWith(lower, ".bin")) {
    absl::StatusOr<std::string> bytes = ReadAll(path);
    if (!bytes.ok()) return bytes.status();
    normserve::Tensor t;
    const std::string shape = absl::GetFlag(FLAGS_shape);
    if (!shape.empty()) {
      for (absl::string_view d : absl::StrSplit(shape, ',')) {
        int64_t v = 0;
        if (!absl::SimpleAtoi(d, &v)) {
          return absl::InvalidArgumentError(absl::StrCat("--shape=", shape, ": not a number list"));
        }
        t.shape.push_back(v);
      }
    } else {
      for (int64_t d : spec.shape()) t.shape.push_back(d < 0 ? 1 : d);
    }
    if (bytes->size() % sizeof(float) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": ", bytes->size(), " bytes is not a whole number of float32"));
    }
    t.data.resize(bytes->size() / sizeof(float));
    std::memcpy(t.data.data(), bytes->data(), t.data.size() * sizeof(float));
    // Size checks are the server's: it names the tensor and the byte counts.
    return t;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": unknown input format (use .npy, .raw, .pgm or .ppm)"));
}

int Predict(const std::vector<std::string>& args) {
  const std::string model = args[1];
  const std::string path = absl::GetFlag(FLAGS_input);
  if (path.empty()) {
    std::cerr << "predict needs --input=FILE\n";
    return 2;
  }
  auto stub = v1::InferenceService::NewStub(Connect());
  absl::StatusOr<v1::GetModelMetadataResponse> md = FetchMetadata(stub.get(), model);
  if (!md.ok()) return Report(md.status());
  if (md->inputs_size() != 1) {
    std::cerr << "error: the CLI feeds single-input models; " << model << " has "
              << md->inputs_size() << " inputs\n";
    return 1;
  }
  absl::StatusOr<normserve::Tensor> input = LoadInput(path, md->inputs(0));
  if (!input.ok()) return Report(input.status());

  v1::PredictRequest req;
  req.mutable_model_spec()->set_name(model);
  req.mutable_model_spec()->set_version(absl::GetFlag(FLAGS_version));
  v1::Tensor* t = req.add_inputs();
  t->set_name(md->inputs(0).name());
  t->set_dtype(v1::DATA_TYPE_FP32);
  for (int64_t d : input->shape) t->add_shape(d);
  t->mutable_raw_data()->assign(reinterpret_cast<const char*>(input->data.data()),
                                input->data.size() * sizeof(float));
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  v1::PredictResponse resp;
  grpc::Status s = stub->Predict(&ctx, req, &resp);
  if (!s.ok()) return Report(s);

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
      const int64_t k = std::min<int64_t>(absl::GetFlag(FLAGS_top), per_row);
      std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int64_t a, int64_t b) {
        return values[r * per_row + a] > values[r * per_row + b];
      });
      if (rows > 1) std::cout << " row " << r << "\n";
      for (int64_t i = 0; i < k; ++i) {
        const int64_t idx = order[i];
        std::cout << "  " << idx;
        if (idx < md->labels_size()) std::cout << " (" << md->labels(idx) << ")";
        std::printf("\t%.6g\n", values[r * per_row + idx]);
        std::fflush(stdout);
      }
    }
  }
  return 0;
}

int Admin(const std::vector<std::string>& args) {
  auto stub = v1::InferenceService::NewStub(Connect());
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  const std::string name = args.size() > 1 ? args[1] : "";
  grpc::Status s;
  if (args[0] == "load") {
    v1::LoadModelRequest req;
    req.set_name(name);
    v1::LoadModelResponse resp;
    s = stub->LoadModel(&ctx, req, &resp);
    if (s.ok())
      std::cout << "loaded " << name << " versions " << absl::StrJoin(resp.status().versions(), ",")
                << "\n";
  } else if (args[0] == "unload") {
    v1::UnloadModelRequest req;
    req.set_name(name);
    v1::UnloadModelResponse resp;
    s = stub->UnloadModel(&ctx, req, &resp);
    if (s.ok()) std::cout << "unloaded " << name << "\n";
  } else {
    v1::ReloadModelRequest req;
    req.set_name(name);
    v1::ReloadModelResponse resp;
    s = stub->ReloadModel(&ctx, req, &resp);
    for (const v1::ModelStatus& m : resp.models()) {
      std::cout << m.name() << "\tversions " << absl::StrJoin(m.versions(), ",") << "\n";
    }
  }
  return Report(s);
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "normserve-cli [--server=HOST:PORT] COMMAND\n"
      "  health [MODEL]        grpc.health.v1 status of the server or a model\n"
      "  list                  models, serving versions, last load errors\n"
      "  metadata MODEL        signature and BatchNorm analysis\n"
      "  predict MODEL --input=FILE.npy|FILE.raw|IMAGE.pgm|IMAGE.ppm [--top=5]\n"
      "  load MODEL | unload MODEL | reload [MODEL]");
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  std::vector<std::string> args(positional.begin() + 1, positional.end());
  if (args.empty()) {
    std::cerr << absl::ProgramUsageMessage() << "\n";
    return 2;
  }
  const std::string& cmd = args[0];
  auto need = [&](size_t n) {
    if (args.size() >= n) return true;
    std::cerr << cmd << ": missing MODEL\n" << absl::ProgramUsageMessage() << "\n";
    return false;
  };
  if (cmd == "health") return Health(args);
  if (cmd == "list") return List();
  if (cmd == "metadata") return need(2) ? Metadata(args) : 2;
  if (cmd == "predict") return need(2) ? Predict(args) : 2;
  if (cmd == "load" || cmd == "unload") return need(2) ? Admin(args) : 2;
  if (cmd == "reload") return Admin(args);
  std::cerr << "unknown command \"" << cmd << "\"\n" << absl::ProgramUsageMessage() << "\n";
  return 2;
}
