// The on-disk model repository: <root>/<model>/<version>/model.onnx with an optional
// <root>/<model>/config.json, and the version policy that picks which versions serve.
#ifndef NORMSERVE_SERVICE_MODEL_REPOSITORY_H_
#define NORMSERVE_SERVICE_MODEL_REPOSITORY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "normserve/v1/model_config.pb.h"
#include "service/servable.h"

namespace normserve {

struct VersionOnDisk {
  int64_t version = 0;
  std::string path;  // .../<version>/model.onnx
  FileStamp stamp;
};

struct ModelOnDisk {
  std::string name;
  normserve::v1::ModelConfig config;
  // Every numbered version directory holding a model.onnx, ascending.
  std::vector<VersionOnDisk> versions;
};

// A model's config.json text parsed and checked (unknown keys, negative limits, a platform
// other than onnx are errors); `source` names the file in messages.
absl::StatusOr<normserve::v1::ModelConfig> ParseModelConfig(absl::string_view json,
                                                            const std::string& source);

// Versions of `available` (ascending) that `policy` serves, ascending.
std::vector<int64_t> SelectVersions(const normserve::v1::VersionPolicy& policy,
                                    const std::vector<int64_t>& available);

class ModelRepository {
 public:
  explicit ModelRepository(std::string root) : root_(std::move(root)) {}

  const std::string& root() const { return root_; }

  // Names of the model directories, sorted. NOT_FOUND if the root is missing.
  absl::StatusOr<std::vector<std::string>> ListModels() const;

  // The model's config and versions. NOT_FOUND if there is no such directory;
  // INVALID_ARGUMENT (naming the file) for a config.json that does not parse.
  absl::StatusOr<ModelOnDisk> ReadModel(const std::string& name) const;

 private:
  std::string root_;
};

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_MODEL_REPOSITORY_H_
