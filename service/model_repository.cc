// Filesystem layout and version policy of the model repository.
#include "service/model_repository.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/util/json_util.h"
#include "kernels/precision.h"
#include "service/client_echo.h"
#include "service/performance_hint.h"
#include "service/preprocess_spec.h"

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

// Every field name (proto and JSON spelling) of ModelConfig and the messages it holds:
// the keys an error may name because they are ours, not the file's.
const std::set<std::string>& ConfigKeys() {
  static const auto* const keys = [] {
    auto* out = new std::set<std::string>;
    std::vector<const google::protobuf::Descriptor*> todo = {
        normserve::v1::ModelConfig::descriptor()};
    std::set<const google::protobuf::Descriptor*> seen;
    while (!todo.empty()) {
      const google::protobuf::Descriptor* d = todo.back();
      todo.pop_back();
      if (!seen.insert(d).second) continue;
      for (int i = 0; i < d->field_count(); ++i) {
        out->insert(d->field(i)->name());
        out->insert(d->field(i)->json_name());
        if (d->field(i)->message_type() != nullptr) todo.push_back(d->field(i)->message_type());
      }
    }
    return out;
  }();
  return *keys;
}

// protobuf's JSON parser reports a syntax error as "<reason>\n<a line of the input>\n^"
// and a field error as "<key path>: <reason with the offending value quoted>". The file
// may be anything (a symlink to a secret): keep the parser's reason and locate it by
// byte offset and line, but drop the input's text, unknown keys and quoted values.
std::string ConfigParseError(const fs::path& path, const std::string& text,
                             absl::string_view parser_message) {
  const std::vector<std::string> lines = absl::StrSplit(parser_message, '\n');
  std::string reason = lines.empty() ? std::string() : lines[0];
  int64_t offset = -1;
  if (lines.size() >= 3) {
    const size_t caret = lines[2].find('^');
    if (lines[1].empty()) {
      offset = static_cast<int64_t>(text.size());
    } else if (const size_t at = text.find(lines[1]); at != std::string::npos) {
      offset = static_cast<int64_t>(at + (caret == std::string::npos ? 0 : caret));
    }
  }
  static const std::regex* const field_error = new std::regex(R"(^([^ :]+): (.*)$)");
  std::smatch m;
  if (std::regex_match(reason, m, *field_error)) {
    std::string key = m[1].str();
    const std::string rest = m[2].str();
    // A path like "version_policy.latest.num_versions" or "(syntax)": its last component.
    key.erase(std::remove_if(key.begin(), key.end(), [](char c) { return c == '(' || c == ')'; }),
              key.end());
    const std::string leaf =
        key.substr(key.rfind('.') == std::string::npos ? 0 : key.rfind('.') + 1);
    if (ConfigKeys().count(leaf) > 0) {
      reason = absl::StrCat("key \"", key, "\": ", rest);
    } else {
      reason = absl::StrCat("an unknown key: ", rest);
    }
    if (offset < 0) {
      const size_t at = text.find(absl::StrCat("\"", leaf, "\""));
      if (at != std::string::npos) offset = static_cast<int64_t>(at);
    }
  }
  static const std::regex* const quoted = new std::regex(R"("[^"]*"|\([^)]*\))");
  // Our own key names survive (they were put back in quotes above, outside `rest`).
  std::string cleaned;
  if (absl::StartsWith(reason, "key \"")) {
    const size_t end = reason.find("\": ") + 3;
    cleaned = reason.substr(0, end) + std::regex_replace(reason.substr(end), *quoted, "(a value)");
  } else {
    cleaned = std::regex_replace(reason, *quoted, "(a value)");
  }
  if (cleaned.size() > 200) cleaned = Echo(cleaned);
  std::string where;
  if (offset >= 0) {
    const int64_t line =
        1 + std::count(text.begin(), text.begin() + std::min<size_t>(offset, text.size()), '\n');
    where = absl::StrCat(" at byte ", offset, " (line ", line, ")");
  }
  return absl::StrCat(path.string(), ": not a valid ModelConfig JSON", where, ": ", cleaned);
}

absl::StatusOr<normserve::v1::ModelConfig> ReadConfig(const fs::path& path) {
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
        ConfigParseError(fs::path(source), std::string(json), std::string(status.message())));
  }
  if (config.max_batch_size() < 0 || config.intra_op_threads() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": max_batch_size and intra_op_threads must be >= 0"));
  }
  if (!config.precision().empty() && !ParsePrecision(config.precision(), "precision").ok()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": precision \"",
                                                   Echo(config.precision()),
                                                   "\" is not a precision (fp32, bf16, int8)"));
  }
  if (config.has_preprocess()) {
    if (absl::Status s = ValidatePreprocess(config.preprocess(), 0); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": ", s.message()));
    }
  }
  if (!config.performance_hint().empty()) {
    absl::StatusOr<PerformanceHint> hint =
        ParsePerformanceHint(config.performance_hint(), "performance_hint");
    if (!hint.ok())
      return absl::InvalidArgumentError(absl::StrCat(source, ": ", hint.status().message()));
  }
  if (config.has_dynamic_batching()) {
    const normserve::v1::DynamicBatching& b = config.dynamic_batching();
    if (b.max_batch_size() < 2 || b.max_batch_size() > 4096) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": dynamic_batching.max_batch_size ",
                                                     b.max_batch_size(), " is outside [2, 4096]"));
    }
    if (b.max_queue_delay_microseconds() < 0 || b.max_queue_delay_microseconds() > 1000000) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": dynamic_batching.max_queue_delay_microseconds ",
                       b.max_queue_delay_microseconds(), " is outside [0, 1000000]"));
    }
  }
  if (!config.platform().empty() && config.platform() != "onnx") {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": platform \"", Echo(config.platform()), "\" is not served (onnx)"));
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
  // A model directory that resolves outside the root is still listed: ReadModel then
  // refuses it with a reason the operator sees in ListModels.
  for (const fs::directory_entry& entry : it) {
    const std::string name = entry.path().filename().string();
    if (entry.is_directory(ec) && IsModelName(name)) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

absl::Status ModelRepository::CheckInside(const std::string& path) const {
  if (options_.allow_symlinks_outside) return absl::OkStatus();
  std::error_code ec;
  const fs::path root = fs::canonical(root_, ec);
  if (ec) return absl::NotFoundError(absl::StrCat("model repository ", root_, ": ", ec.message()));
  const fs::path resolved = fs::canonical(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat(path, ": ", ec.message()));
  // Component-wise prefix: "/repo-other" is not inside "/repo".
  auto r = root.begin();
  auto p = resolved.begin();
  for (; r != root.end() && p != resolved.end() && *r == *p; ++r, ++p) {
  }
  if (r == root.end()) return absl::OkStatus();
  // The target is not named: it is outside what the repository may disclose.
  return absl::FailedPreconditionError(
      absl::StrCat(path,
                   " is a symlink that resolves outside the model repository; refused (the server "
                   "flag --allow_symlinks_outside_repository allows it)"));
}

bool ModelRepository::Contains(const std::string& name) const {
  std::error_code ec;
  return IsModelName(name) && fs::is_directory(fs::path(root_) / name, ec);
}

absl::StatusOr<ModelOnDisk> ModelRepository::ReadModel(const std::string& name) const {
  if (!IsModelName(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", Echo(name),
                     "\" is not a model name (letters, digits, '_', '-', '.'; no leading '.')"));
  }
  const fs::path dir = fs::path(root_) / name;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(
        absl::StrCat("model \"", Echo(name), "\" is not in the repository ", root_));
  }
  if (absl::Status inside = CheckInside(dir.string()); !inside.ok()) return inside;
  ModelOnDisk model;
  model.name = name;
  const fs::path config_path = dir / kConfigFile;
  if (fs::exists(config_path, ec)) {
    if (absl::Status inside = CheckInside(config_path.string()); !inside.ok()) return inside;
    absl::StatusOr<normserve::v1::ModelConfig> config = ReadConfig(config_path);
    if (!config.ok()) return config.status();
    model.config = *std::move(config);
  }
  if (!model.config.name().empty() && model.config.name() != name) {
    return absl::InvalidArgumentError(
        absl::StrCat(config_path.string(), ": name \"", Echo(model.config.name()),
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
    // Covers a version directory and a model.onnx symlinked out alike: canonical()
    // resolves every component. The whole model is refused, so what serves keeps serving
    // and the reason shows in ListModels rather than a version silently missing.
    if (absl::Status inside = CheckInside(file.string()); !inside.ok()) return inside;
    model.versions.push_back({version, file.string(), *stamp});
  }
  if (ec) return absl::NotFoundError(absl::StrCat(dir.string(), ": ", ec.message()));
  std::sort(model.versions.begin(), model.versions.end(),
            [](const VersionOnDisk& a, const VersionOnDisk& b) { return a.version < b.version; });
  return model;
}

}  // namespace normserve
