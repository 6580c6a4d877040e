// Version lifecycle: load outside any reader-visible lock, publish by pointer swap.
#include "service/servable_manager.h"

#include <algorithm>
#include <iterator>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "service/client_echo.h"
#include "service/log.h"

namespace normserve {

ServableManager::ServableManager(ModelRepository repository, ServableOptions options,
                                 ServableObserver* observer)
    : repository_(std::move(repository)),
      options_(options),
      observer_(observer),
      snapshot_(std::make_shared<const Snapshot>()) {}

ServableManager::~ServableManager() { StopPolling(); }

std::shared_ptr<const ServableManager::Snapshot> ServableManager::snapshot() const {
  absl::MutexLock lock(&mu_);
  return snapshot_;
}

absl::Status ServableManager::LoadAll() {
  absl::StatusOr<std::vector<std::string>> names = repository_.ListModels();
  if (!names.ok()) return names.status();
  absl::MutexLock lock(&load_mu_);
  SyncAll();
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const Servable>> ServableManager::Get(absl::string_view model,
                                                                     int64_t version) const {
  const std::shared_ptr<const Snapshot> snap = snapshot();
  auto it = snap->models.find(model);
  if (it == snap->models.end() || it->second.empty()) {
    auto err = snap->errors.find(model);
    if (err != snap->errors.end() && !err->second.empty()) {
      return absl::NotFoundError(
          absl::StrCat("model \"", Echo(model), "\" is not serving: ", err->second));
    }
    return absl::NotFoundError(absl::StrCat("model \"", Echo(model), "\" is not loaded"));
  }
  const VersionMap& versions = it->second;
  if (version == 0) return versions.rbegin()->second;
  auto v = versions.find(version);
  if (v == versions.end()) {
    std::vector<int64_t> serving;
    for (const auto& [n, s] : versions) serving.push_back(n);
    return absl::NotFoundError(absl::StrCat("model \"", Echo(model), "\" has no version ", version,
                                            " serving (serving: ", absl::StrJoin(serving, ", "),
                                            ")"));
  }
  return v->second;
}

absl::StatusOr<std::vector<int64_t>> ServableManager::Versions(absl::string_view model) const {
  const std::shared_ptr<const Snapshot> snap = snapshot();
  auto it = snap->models.find(model);
  if (it == snap->models.end() || it->second.empty()) {
    return absl::NotFoundError(absl::StrCat("model \"", Echo(model), "\" is not loaded"));
  }
  std::vector<int64_t> out;
  for (const auto& [v, s] : it->second) out.push_back(v);
  return out;
}

ModelStatusInfo ServableManager::StatusOf(const std::string& model) const {
  const std::shared_ptr<const Snapshot> snap = snapshot();
  ModelStatusInfo info;
  info.name = model;
  auto it = snap->models.find(model);
  if (it != snap->models.end()) {
    for (const auto& [v, s] : it->second) info.versions.push_back(v);
  }
  auto err = snap->errors.find(model);
  if (err != snap->errors.end()) info.last_error = err->second;
  return info;
}

std::vector<ModelStatusInfo> ServableManager::List() const {
  const std::shared_ptr<const Snapshot> snap = snapshot();
  std::map<std::string, ModelStatusInfo> by_name;
  for (const auto& [name, versions] : snap->models) {
    ModelStatusInfo& info = by_name[name];
    info.name = name;
    for (const auto& [v, s] : versions) info.versions.push_back(v);
  }
  for (const auto& [name, error] : snap->errors) {
    ModelStatusInfo& info = by_name[name];
    info.name = name;
    info.last_error = error;
  }
  std::vector<ModelStatusInfo> out;
  for (auto& [name, info] : by_name) out.push_back(std::move(info));
  return out;
}

absl::StatusOr<ModelStatusInfo> ServableManager::Load(const std::string& model) {
  absl::MutexLock lock(&load_mu_);
  if (Versions(model).ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "model \"", Echo(model), "\" is already loaded; use ReloadModel to rescan it"));
  }
  unloaded_by_api_.erase(model);
  // An explicit load retries files that failed before.
  failed_.erase(model);
  absl::Status status = SyncModel(model);
  if (!status.ok()) return status;
  if (!Versions(model).ok()) {
    return absl::NotFoundError(absl::StrCat("model \"", Echo(model),
                                            "\" has no version directory with ",
                                            "a model.onnx that its version policy serves"));
  }
  return StatusOf(model);
}

absl::Status ServableManager::Unload(const std::string& model) {
  absl::MutexLock lock(&load_mu_);
  if (!Versions(model).ok()) {
    return absl::NotFoundError(absl::StrCat("model \"", Echo(model), "\" is not loaded"));
  }
  unloaded_by_api_.insert(model);
  Publish(model, {}, "");
  Log(LogLevel::kInfo, absl::StrCat("unloaded model ", model));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<ModelStatusInfo>> ServableManager::Reload(const std::string& model) {
  absl::MutexLock lock(&load_mu_);
  if (model.empty()) {
    SyncAll();
    return List();
  }
  unloaded_by_api_.erase(model);
  failed_.erase(model);
  absl::Status status = SyncModel(model);
  if (!status.ok()) return status;
  return std::vector<ModelStatusInfo>{StatusOf(model)};
}

void ServableManager::SyncAll() {
  absl::StatusOr<std::vector<std::string>> names = repository_.ListModels();
  if (!names.ok()) {
    // A repository that vanished (unmounted volume) must not unload everything.
    Log(LogLevel::kWarning, std::string(names.status().message()));
    return;
  }
  std::set<std::string> on_disk(names->begin(), names->end());
  for (const std::string& name : *names) {
    if (unloaded_by_api_.count(name) > 0) continue;
    absl::Status status = SyncModel(name);
    (void)status;  // recorded in the snapshot's errors and logged
  }
  // Models whose directory is gone stop serving, and their last error goes with them.
  const std::shared_ptr<const Snapshot> snap = snapshot();
  for (const auto& [name, versions] : snap->models) {
    if (on_disk.count(name) == 0) {
      Log(LogLevel::kInfo, absl::StrCat("model ", name, " left the repository; unloading"));
      Publish(name, {}, "");
    }
  }
  for (const auto& [name, error] : snap->errors) {
    if (on_disk.count(name) == 0 && snap->models.count(name) == 0) Publish(name, {}, "");
  }
  for (auto it = failed_.begin(); it != failed_.end();) {
    it = on_disk.count(it->first) == 0 ? failed_.erase(it) : std::next(it);
  }
}

absl::Status ServableManager::SyncModel(const std::string& model) {
  const std::shared_ptr<const Snapshot> snap = snapshot();
  VersionMap current;
  if (auto it = snap->models.find(model); it != snap->models.end()) current = it->second;

  absl::StatusOr<ModelOnDisk> disk = repository_.ReadModel(model);
  if (!disk.ok()) {
    if (!repository_.Contains(model)) {
      // Only models of the repository have entries: a client naming anything else (an
      // invalid or unknown name) must not make the model list grow.
      if (!current.empty() || snap->errors.count(model) > 0) Publish(model, {}, "");
      failed_.erase(model);
      return disk.status();
    }
    // A config.json that does not parse: keep what serves, report why nothing changed.
    const std::string error = std::string(disk.status().message());
    Log(LogLevel::kError, error);
    Publish(model, current, error);
    return disk.status();
  }

  std::vector<int64_t> available;
  for (const VersionOnDisk& v : disk->versions) available.push_back(v.version);
  const std::vector<int64_t> wanted = SelectVersions(disk->config.version_policy(), available);
  const std::string config_bytes = disk->config.SerializeAsString();

  VersionMap next;
  absl::Status first_error;
  std::string error_text;
  for (const VersionOnDisk& v : disk->versions) {
    if (std::find(wanted.begin(), wanted.end(), v.version) == wanted.end()) continue;
    if (auto it = current.find(v.version); it != current.end() && it->second->stamp == v.stamp &&
                                           it->second->config.SerializeAsString() == config_bytes) {
      next.emplace(v.version, it->second);  // unchanged: keep the compiled servable
      continue;
    }
    auto failed = failed_[model].find(v.version);
    if (failed != failed_[model].end() && failed->second == v.stamp) {
      // Same broken file as last time: do not recompile it every poll.
      const auto err = snap->errors.find(model);
      if (err != snap->errors.end()) error_text = err->second;
      if (first_error.ok()) first_error = absl::FailedPreconditionError(error_text);
      continue;
    }
    const absl::Time start = absl::Now();
    absl::StatusOr<std::shared_ptr<const Servable>> servable =
        LoadServable(model, v.version, v.path, v.stamp, disk->config, options_);
    if (observer_ != nullptr) observer_->OnLoadResult(model, v.version, servable.status());
    if (!servable.ok()) {
      failed_[model][v.version] = v.stamp;
      const std::string kept =
          current.empty() ? std::string("nothing else serves")
                          : absl::StrCat("version ", current.rbegin()->first, " keeps serving");
      error_text = absl::StrCat("version ", v.version, " refused (", kept,
                                "): ", servable.status().message());
      Log(LogLevel::kError, absl::StrCat("model ", model, ": ", error_text));
      if (first_error.ok()) first_error = absl::Status(servable.status().code(), error_text);
      continue;
    }
    failed_[model].erase(v.version);
    Log(LogLevel::kInfo, absl::StrCat("loaded model ", model, " version ", v.version, " in ",
                                      absl::FormatDuration(absl::Now() - start)));
    next.emplace(v.version, *std::move(servable));
  }
  if (!first_error.ok()) {
    // A refused version must not take down what serves: keep every current version.
    for (const auto& [version, servable] : current) next.emplace(version, servable);
  }
  const auto old_error = snap->errors.find(model);
  const bool error_changed =
      (old_error == snap->errors.end() ? std::string() : old_error->second) != error_text;
  if (next != current || error_changed) {
    Publish(model, std::move(next), error_text);
  }
  return first_error;
}

void ServableManager::Publish(const std::string& model, VersionMap versions,
                              const std::string& error) {
  std::vector<int64_t> serving;
  std::vector<std::string> precisions;
  for (const auto& [v, s] : versions) {
    serving.push_back(v);
    precisions.push_back(s->precision());
  }
  {
    absl::MutexLock lock(&mu_);
    auto next = std::make_shared<Snapshot>(*snapshot_);
    if (versions.empty()) {
      next->models.erase(model);
    } else {
      next->models[model] = std::move(versions);
    }
    if (error.empty()) {
      next->errors.erase(model);
    } else {
      next->errors[model] = error;
    }
    snapshot_ = std::move(next);
  }
  // The servables replaced here are freed when their last in-flight request drops them.
  if (observer_ != nullptr) observer_->OnServingChanged(model, serving, precisions);
}

void ServableManager::StartPolling(absl::Duration period) {
  StopPolling();
  {
    absl::MutexLock lock(&poll_mu_);
    stop_polling_ = false;
  }
  poller_ = std::thread([this, period] { PollLoop(period); });
}

void ServableManager::StopPolling() {
  {
    absl::MutexLock lock(&poll_mu_);
    stop_polling_ = true;
  }
  if (poller_.joinable()) poller_.join();
}

void ServableManager::PollLoop(absl::Duration period) {
  while (true) {
    {
      absl::MutexLock lock(&poll_mu_);
      auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(poll_mu_) { return stop_polling_; };
      poll_mu_.AwaitWithTimeout(absl::Condition(&stop), period);
      if (stop_polling_) return;
    }
    absl::MutexLock lock(&load_mu_);
    SyncAll();
  }
}

}  // namespace normserve
