// A file to one model input tensor, by extension: .npy (float32, as is), .raw/.bin
// (float32 little-endian), and images (.png, .jpg/.jpeg, .pgm, .ppm) through the model's
// declared preprocessing. predict and train accumulate both read their files here, so the
// same file becomes the same tensor in both.
#ifndef NORMSERVE_TOOLS_INPUT_FILE_H_
#define NORMSERVE_TOOLS_INPUT_FILE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/tensor.h"
#include "normserve/v1/inference.pb.h"
#include "normserve/v1/preprocess.pb.h"

namespace normserve::cli {

struct InputSpec {
  // The model input's declared shape (-1 for dynamic dims).
  std::vector<int64_t> shape;
  ::normserve::v1::Preprocess preprocess;
  // Shape of a .raw file; empty: the model's, dynamic dims as 1.
  std::vector<int64_t> raw_shape;
};

// The spec of a single-input model from its metadata; `preprocess_json` (a JSON object or
// "@FILE") overrides the model's declared preprocessing when not empty.
absl::StatusOr<InputSpec> InputSpecFromMetadata(const ::normserve::v1::GetModelMetadataResponse& md,
                                                const std::string& preprocess_json);

absl::StatusOr<std::string> ReadFileBytes(const std::string& path);
// True for every extension InputFromBytes reads.
bool IsInputPath(absl::string_view path);
absl::StatusOr<Tensor> InputFromBytes(absl::string_view bytes, const std::string& path,
                                      const InputSpec& spec);

}  // namespace normserve::cli

#endif  // NORMSERVE_TOOLS_INPUT_FILE_H_
