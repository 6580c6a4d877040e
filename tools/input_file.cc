// Input files to tensors. The .npy reader is kernels/npy_io (shared with the tests and the
// PyTorch oracle exchange); it reads the header dict and the float32 payload only, which is
// the whole format for float32 C-order arrays.
#include "tools/input_file.h"

#include <cstring>
#include <fstream>
#include <sstream>
#include <string_view>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"
#include "kernels/npy_io.h"
#include "tools/image_decode.h"
#include "tools/image_preprocess.h"

namespace normserve::cli {

absl::StatusOr<std::string> ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot be read"));
  std::stringstream s;
  s << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read error"));
  return s.str();
}

absl::StatusOr<InputSpec> InputSpecFromMetadata(const v1::GetModelMetadataResponse& md,
                                                const std::string& preprocess_json) {
  if (md.inputs_size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat("the CLI feeds single-input models; ",
                                                   md.model_spec().name(), " has ",
                                                   md.inputs_size(), " inputs"));
  }
  InputSpec spec;
  spec.shape.assign(md.inputs(0).shape().begin(), md.inputs(0).shape().end());
  spec.preprocess = md.preprocess();
  if (!preprocess_json.empty()) {
    std::string json = preprocess_json;
    if (absl::StartsWith(json, "@")) {
      absl::StatusOr<std::string> bytes = ReadFileBytes(json.substr(1));
      if (!bytes.ok()) return bytes.status();
      json = *bytes;
    }
    spec.preprocess.Clear();
    auto s = google::protobuf::util::JsonStringToMessage(json, &spec.preprocess);
    if (!s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--preprocess: not a preprocess declaration: ", s.message().ToString()));
    }
  }
  const int64_t channels = spec.shape.size() == 4 ? spec.shape[1] : 0;
  if (channels > 0) {
    if (absl::Status s = ValidatePreprocess(spec.preprocess, channels); !s.ok()) return s;
  }
  return spec;
}

bool IsInputPath(absl::string_view path) {
  const std::string lower = absl::AsciiStrToLower(path);
  return IsImagePath(lower) || absl::EndsWith(lower, ".npy") || absl::EndsWith(lower, ".raw") ||
         absl::EndsWith(lower, ".bin");
}

absl::StatusOr<Tensor> InputFromBytes(absl::string_view bytes, const std::string& path,
                                      const InputSpec& spec) {
  const std::string lower = absl::AsciiStrToLower(path);
  if (absl::EndsWith(lower, ".npy")) {
    absl::StatusOr<Tensor> t = ParseNpy(std::string_view(bytes.data(), bytes.size()));
    if (!t.ok())
      return absl::Status(t.status().code(), absl::StrCat(path, ": ", t.status().message()));
    return t;
  }
  if (IsImagePath(lower)) {
    if (spec.shape.size() != 4) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": an image needs a model input of shape [N, C, H, W]; this one has rank ",
          spec.shape.size()));
    }
    absl::StatusOr<Image> img = DecodeImage(bytes, path);
    if (!img.ok()) return img.status();
    return PreprocessImage(*img, spec.preprocess, spec.shape[1], spec.shape[2], spec.shape[3],
                           path);
  }
  if (absl::EndsWith(lower, ".raw") || absl::EndsWith(lower, ".bin")) {
    if (bytes.size() % sizeof(float) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": ", bytes.size(), " bytes is not a whole number of float32"));
    }
    Tensor t;
    if (!spec.raw_shape.empty()) {
      t.shape = spec.raw_shape;
    } else {
      for (int64_t d : spec.shape) t.shape.push_back(d < 0 ? 1 : d);
    }
    t.data.resize(bytes.size() / sizeof(float));
    std::memcpy(t.data.data(), bytes.data(), t.data.size() * sizeof(float));
    // Size checks are the server's: it names the tensor and the byte counts.
    return t;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      path, ": unknown input format (use .npy, .raw, .png, .jpg, .jpeg, .pgm or .ppm)"));
}

}  // namespace normserve::cli
