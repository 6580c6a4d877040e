// Filesystem layout and version policy of the model repository.
#include "service/model_repository.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"

namespace normserve {
namespace {

namespace fs = std::filesystem;

constexpr char kModelFile[] = "model.onnx";
constexpr char kConfigFile[] = "config.json";

// A model name is one path component a client can type: no separators, no dot files.
bool IsModelName(const std::string& name) {
  if (name.empty() || name[0] == '.') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
  });
}

absl::StatusOr<FileStamp> Stamp(const fs::path& path) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat(path.string(), ": ", ec.message()));
  const auto mtime = fs::last_write_time(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat(path.string(), ": ", ec.message()));
  FileStamp stamp;
  stamp.size = static_cast<int64_t>(size);
  stamp.mtime_ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(mtime.time_since_epoch()).count();
  return stamp;
}

absl::StatusOr<normserve::v1::ModelConfig> ReadConfig(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return normserve::v1::ModelConfig();
  std::ifstream in(path);
  if (!in) return absl::PermissionDeniedError(absl::StrCat(path.string(), ": cannot be read"));
  std::stringstream text;
  text << in.rdbuf();
  return ParseModelConfig(text.str(), path.string());
}

}  // namespace

absl::StatusOr<normserve::v1::ModelConfig> ParseModelConfig(absl::string_view json,
                                                            const std::string& source) {
  normserve::v1::ModelConfig config;
  google::protobuf::util::JsonParseOptions options;
  // A misspelt key must not silently fall back to a default policy.
  options.ignore_unknown_fields = false;
  const auto status = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(json.data(), json.size()), &config, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": ", std::string(status.message())));
  }
  if (config.max_batch_size() < 0 || config.intra_op_threads() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": max_batch_size and intra_op_threads must be >= 0"));
  }
  if (!config.platform().empty() && config.platform() != "onnx") {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": platform \"", config.platform(), "\" is not served (onnx)"));
  }
  return config;
}

std::vector<int64_t> SelectVersions(const normserve::v1::VersionPolicy& policy,
                                    const std::vector<int64_t>& available) {
  using Policy = normserve::v1::VersionPolicy;
  std::vector<int64_t> out;
  switch (policy.policy_case()) {
    case Policy::kAll:
      return available;
    case Policy::kSpecific:
      for (int64_t v : available) {
        if (std::find(policy.specific().versions().begin(), policy.specific().versions().end(),
                      v) != policy.specific().versions().end()) {
          out.push_back(v);
        }
      }
      return out;
    case Policy::kLatest:
    case Policy::POLICY_NOT_SET: {
      const size_t n = policy.has_latest() && policy.latest().num_versions() > 0
                           ? policy.latest().num_versions()
                           : 1;
      const size_t first = available.size() > n ? available.size() - n : 0;
      out.assign(available.begin() + first, available.end());
      return out;
    }
  }
  return out;
}

absl::StatusOr<std::vector<std::string>> ModelRepository::ListModels() const {
  std::error_code ec;
  fs::directory_iterator it(root_, ec);
  if (ec) {
    return absl::NotFoundError(
        absl::StrCat("model repository ", root_, " cannot be listed: ", ec.message()));
  }
  std::vector<std::string> names;
  for (const fs::directory_entry& entry : it) {
    const std::string name = entry.path().filename().string();
    if (entry.is_directory(ec) && IsModelName(name)) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

absl::StatusOr<ModelOnDisk> ModelRepository::ReadModel(const std::string& name) const {
  if (!IsModelName(name)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", name, "\" is not a model name (letters, digits, '_', '-', '.'; no leading '.')"));
  }
  const fs::path dir = fs::path(root_) / name;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(
        absl::StrCat("model \"", name, "\" is not in the repository ", root_));
  }
  ModelOnDisk model;
  model.name = name;
  absl::StatusOr<normserve::v1::ModelConfig> config = ReadConfig(dir / kConfigFile);
  if (!config.ok()) return config.status();
  model.config = *std::move(config);
  if (!model.config.name().empty() && model.config.name() != name) {
    return absl::InvalidArgumentError(
        absl::StrCat((dir / kConfigFile).string(), ": name \"", model.config.name(),
                     "\" differs from the directory name \"", name, "\""));
  }
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, ec)) {
    int64_t version = 0;
    // Version directories are positive integers; anything else (tmp dirs of an upload in
    // progress, notes) is not a version.
    if (!entry.is_directory(ec) || !absl::SimpleAtoi(entry.path().filename().string(), &version) ||
        version <= 0) {
      continue;
    }
    const fs::path file = entry.path() / kModelFile;
    absl::StatusOr<FileStamp> stamp = Stamp(file);
    if (!stamp.ok()) continue;  // a version directory still being filled
    model.versions.push_back({version, file.string(), *stamp});
  }
  if (ec) return absl::NotFoundError(absl::StrCat(dir.string(), ": ", ec.message()));
  std::sort(model.versions.begin(), model.versions.end(),
            [](const VersionOnDisk& a, const VersionOnDisk& b) { return a.version < b.version; });
  return model;
}

}  // namespace normserve
