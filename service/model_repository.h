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

struct RepositoryOptions {
  // Symlinks that resolve inside the repository root are always followed (Kubernetes
  // ConfigMaps mount config.json through them). Ones that resolve outside it are refused
  // unless this is set (--allow_symlinks_outside_repository).
  bool allow_symlinks_outside = false;
};

class ModelRepository {
 public:
  explicit ModelRepository(std::string root, RepositoryOptions options = {})
      : root_(std::move(root)), options_(options) {}

  const std::string& root() const { return root_; }

  // Names of the model directories, sorted. NOT_FOUND if the root is missing.
  absl::StatusOr<std::vector<std::string>> ListModels() const;

  // Whether `name` is a model directory of the repository (whether or not it loads):
  // only such names may be remembered by the caller.
  bool Contains(const std::string& name) const;

  // The model's config and versions. INVALID_ARGUMENT for a name that is not one path
  // component; NOT_FOUND if there is no such directory; INVALID_ARGUMENT (naming the
  // file, the byte offset and the parser's reason, never the file's text) for a
  // config.json that does not parse; FAILED_PRECONDITION for a model directory,
  // config.json or model.onnx that resolves outside the root (unless allowed).
  absl::StatusOr<ModelOnDisk> ReadModel(const std::string& name) const;

 private:
  // OK when `path` (which exists) resolves inside the root or options_ allow outside.
  absl::Status CheckInside(const std::string& path) const;

  std::string root_;
  RepositoryOptions options_;
};

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_MODEL_REPOSITORY_H_
