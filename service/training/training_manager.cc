// Sessions table, recovery, commit/rollback publication.
#include "service/training/training_manager.h"

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/status_macros.h"
#include "service/log.h"

namespace normserve {
namespace fs = std::filesystem;
namespace {

constexpr char kManifestFile[] = "manifest";

bool ValidSessionId(const std::string& id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') return false;
  }
  return true;
}

std::string NewSessionId() {
  std::random_device rd;
  return absl::StrFormat("s%08x%08x", rd(), rd());
}

absl::StatusOr<std::string> ReadSmallFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

TrainingManager::TrainingManager(TrainingOptions options, std::string repository_root,
                                 ServableManager* manager, TrainingMetrics* metrics)
    : options_(std::move(options)),
      manager_(manager),
      metrics_(metrics),
      publisher_(std::move(repository_root)) {}

SessionEnv TrainingManager::Env() const {
  SessionEnv env;
  env.intra_op_threads = options_.intra_op_threads;
  env.max_batch = options_.max_batch;
  env.commit_cache_bytes = options_.commit_cache_bytes;
  env.metrics = metrics_;
  return env;
}

absl::StatusOr<int64_t> TrainingManager::LatestServing(const std::string& model) {
  ASSIGN_OR_RETURN(std::vector<int64_t> versions, manager_->Versions(model));
  return versions.back();
}

absl::StatusOr<std::shared_ptr<const Model>> TrainingManager::LoadBase(const std::string& model,
                                                                      int64_t version) {
  absl::StatusOr<std::shared_ptr<const Servable>> servable = manager_->Get(model, version);
  if (servable.ok()) return (*servable)->compiled->model_ptr();
  return Model::LoadFile(publisher_.ModelPath(model, version));
}

void TrainingManager::UpdateSessionGauge(const std::string& model) {
  if (metrics_ == nullptr) return;
  int open = 0;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, s] : sessions_) {
      if (s->model() == model) ++open;
    }
  }
  metrics_->SetOpenSessions(model, open);
}

absl::Status TrainingManager::Recover() {
  std::error_code ec;
  fs::create_directories(options_.state_dir, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("--training_state_dir=", options_.state_dir,
                                            ": cannot create: ", ec.message()));
  }
  // Serving gauges for every model, so dashboards have them before the first commit.
  if (metrics_ != nullptr) {
    for (const ModelStatusInfo& info : manager_->List()) {
      if (info.versions.empty()) continue;
      metrics_->SetServingVersion(info.name, info.versions.back());
      metrics_->SetOpenSessions(info.name, 0);
      absl::StatusOr<std::shared_ptr<const Servable>> s = manager_->Get(info.name, 0);
      if (s.ok()) {
        int undefined = 0;
        for (const BnLayerInfo& l : (*s)->model().bn_layers()) undefined += l.values_per_channel == 1;
        metrics_->SetRequestUndefinedLayers(info.name, undefined);
      }
    }
  }
  std::vector<fs::path> dirs;
  for (const auto& entry : fs::directory_iterator(options_.state_dir, ec)) {
    if (entry.is_directory() && entry.path().filename().string()[0] != '.') dirs.push_back(entry.path());
  }
  std::sort(dirs.begin(), dirs.end());
  for (const fs::path& dir : dirs) {
    const std::string manifest_path = (dir / kManifestFile).string();
    absl::StatusOr<std::string> text = ReadSmallFile(manifest_path);
    absl::StatusOr<SessionConfig> config =
        text.ok() ? ParseManifest(*text) : absl::StatusOr<SessionConfig>(text.status());
    if (!config.ok()) {
      Log(LogLevel::kError, absl::StrCat("training state ", dir.string(), ": cannot recover: ",
                                         config.status().message(), " (left on disk)"));
      continue;
    }
    if (config->state != "open") {
      absl::MutexLock lock(&mu_);
      committed_[config->id] = SessionListing{config->id, config->model, config->base_version, 0, config->state};
      continue;
    }
    absl::StatusOr<std::shared_ptr<const Model>> base = LoadBase(config->model, config->base_version);
    absl::StatusOr<std::shared_ptr<Session>> session =
        base.ok() ? Session::Recover(*config, dir.string(), *base, Env())
                  : absl::StatusOr<std::shared_ptr<Session>>(base.status());
    if (!session.ok()) {
      Log(LogLevel::kError, absl::StrCat("training session ", config->id, ": cannot recover: ",
                                         session.status().message(), " (left on disk)"));
      continue;
    }
    Log(LogLevel::kInfo, absl::StrCat("training session ", config->id, " recovered: model ",
                                      config->model, " v", config->base_version, ", ",
                                      (*session)->requests_accepted(), " requests"));
    {
      absl::MutexLock lock(&mu_);
      sessions_[config->id] = *session;
    }
    UpdateSessionGauge(config->model);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<Session>> TrainingManager::Find(const std::string& id) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(id);
  if (it != sessions_.end()) return it->second;
  auto c = committed_.find(id);
  if (c != committed_.end()) {
    return absl::FailedPreconditionError(absl::StrCat("session ", id, " is already committed"));
  }
  return absl::NotFoundError(absl::StrCat("no training session \"", id, "\""));
}

absl::StatusOr<StartedSession> TrainingManager::StartSession(const std::string& model,
                                                             int64_t version,
                                                             const SessionRequestOptions& o,
                                                             const std::string& requested_id) {
  if (o.min_values_per_channel < 0 || o.max_relative_sem < 0 || o.prior_strength < 0 ||
      o.max_samples < 0 || !std::isfinite(o.max_relative_sem) || !std::isfinite(o.prior_strength)) {
    return absl::InvalidArgumentError("session options must be finite and >= 0 (0: server default)");
  }
  if (o.max_samples > options_.max_samples) {
    return absl::InvalidArgumentError(absl::StrCat("max_samples=", o.max_samples,
                                                   " exceeds the server limit --training_max_samples=",
                                                   options_.max_samples));
  }
  if (!requested_id.empty() && !ValidSessionId(requested_id)) {
    return absl::InvalidArgumentError("session_id must match [A-Za-z0-9_-]{1,64}");
  }
  ASSIGN_OR_RETURN(std::shared_ptr<const Servable> servable, manager_->Get(model, version));
  SessionConfig config;
  config.id = requested_id.empty() ? NewSessionId() : requested_id;
  config.model = servable->name;
  config.base_version = servable->version;
  config.min_values_per_channel =
      o.min_values_per_channel > 0 ? o.min_values_per_channel : options_.min_values_per_channel;
  config.max_relative_sem = o.max_relative_sem > 0 ? o.max_relative_sem : options_.max_relative_sem;
  config.prior_strength = o.prior_strength;
  config.max_samples = o.max_samples > 0 ? o.max_samples : options_.max_samples;

  const std::string dir = (fs::path(options_.state_dir) / config.id).string();
  {
    absl::MutexLock lock(&mu_);
    if (sessions_.count(config.id) || committed_.count(config.id) || reserved_.count(config.id) ||
        fs::exists(dir)) {
      return absl::AlreadyExistsError(absl::StrCat("training session \"", config.id, "\" exists"));
    }
    int open = 0;
    for (const auto& [id, s] : sessions_) open += s->open() ? 1 : 0;
    if (open + static_cast<int>(reserved_.size()) >= options_.max_sessions) {
      if (metrics_ != nullptr) metrics_->Refused(config.model, TrainingMetrics::Refusal::kLimit);
      return absl::ResourceExhaustedError(absl::StrCat(
          "at most --training_max_sessions=", options_.max_sessions,
          " training sessions may be open; commit or abort one first"));
    }
    reserved_[config.id] = config.model;
  }
  auto create = [&]() -> absl::StatusOr<std::shared_ptr<Session>> {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
    RETURN_IF_ERROR(WriteFileAtomically(dir + "/" + kManifestFile, SerializeManifest(config)));
    RETURN_IF_ERROR(FsyncDirectory(options_.state_dir));
    return Session::Create(config, dir, servable->compiled->model_ptr(), Env());
  };
  absl::StatusOr<std::shared_ptr<Session>> session = create();
  {
    absl::MutexLock lock(&mu_);
    reserved_.erase(config.id);
    if (session.ok()) sessions_[config.id] = *session;
  }
  if (!session.ok()) {
    std::error_code ec;
    fs::remove_all(dir, ec);
    return session.status();
  }
  UpdateSessionGauge(config.model);
  if (metrics_ != nullptr) {
    int undefined = 0;
    for (const BnLayerInfo& l : servable->model().bn_layers()) undefined += l.values_per_channel == 1;
    metrics_->SetRequestUndefinedLayers(config.model, undefined);
  }
  Log(LogLevel::kInfo, absl::StrCat("training session ", config.id, " started on ", config.model,
                                    " v", config.base_version));
  return StartedSession{config.id, config.model, config.base_version, servable->model().bn_layers()};
}

absl::StatusOr<AccumulateOutcome> TrainingManager::Accumulate(const std::string& session_id,
                                                              const std::string& request_id,
                                                              absl::Span<const RequestTensor> inputs) {
  ASSIGN_OR_RETURN(std::shared_ptr<Session> session, Find(session_id));
  return session->Accumulate(request_id, inputs);
}

absl::StatusOr<SessionSummary> TrainingManager::Report(const std::string& session_id, bool exact) {
  std::shared_ptr<Session> session;
  {
    absl::MutexLock lock(&mu_);
    auto it = sessions_.find(session_id);
    if (it == sessions_.end()) {
      return absl::NotFoundError(absl::StrCat("no open training session \"", session_id, "\""));
    }
    session = it->second;
  }
  return session->Report(exact);
}

absl::StatusOr<int64_t> TrainingManager::PublishLocked(const std::string& model,
                                                       const std::string& onnx) {
  ASSIGN_OR_RETURN(int64_t version, publisher_.Publish(model, onnx));
  absl::StatusOr<std::vector<ModelStatusInfo>> reloaded = manager_->Reload(model);
  if (!reloaded.ok()) {
    return absl::InternalError(absl::StrCat("published ", model, " v", version,
                                            " but serving did not switch to it: ",
                                            reloaded.status().message()));
  }
  if (metrics_ != nullptr) {
    absl::StatusOr<int64_t> latest = LatestServing(model);
    if (latest.ok()) metrics_->SetServingVersion(model, *latest);
    metrics_->SetLastCommitNow(model);
  }
  Log(LogLevel::kInfo, absl::StrCat("training: published ", model, " v", version));
  return version;
}

absl::StatusOr<SessionSummary> TrainingManager::Commit(const std::string& session_id, bool force) {
  ASSIGN_OR_RETURN(std::shared_ptr<Session> session, Find(session_id));
  const std::string model = session->model();
  absl::MutexLock publish_lock(&publish_mu_);
  TrainingMetrics::CommitResult result = TrainingMetrics::CommitResult::kError;
  auto publish = [&](const SessionConfig& config, SessionSummary& summary) -> absl::StatusOr<int64_t> {
    ASSIGN_OR_RETURN(int64_t latest, LatestServing(model));
    if (latest != config.base_version) {
      result = TrainingMetrics::CommitResult::kStaleBase;
      return absl::FailedPreconditionError(absl::StrCat(
          "session ", config.id, " is based on ", model, " v", config.base_version, " but v", latest,
          " is the latest serving version; Rebase the session (its samples are replayed) or start a new one"));
    }
    if (!summary.gate_passed && !force) {
      result = TrainingMetrics::CommitResult::kGateFailed;
      return absl::FailedPreconditionError(absl::StrCat(
          "quality gate failed for session ", config.id, " (min values per channel ",
          config.min_values_per_channel, ", max relative SEM ", config.max_relative_sem,
          "; force publishes anyway): ", GateFailures(summary)));
    }
    ASSIGN_OR_RETURN(std::string onnx, summary.committed_model->SerializeOnnx());
    publish_mu_.AssertHeld();  // taken above; runs under Session::Commit's lock too
    ASSIGN_OR_RETURN(int64_t version, PublishLocked(model, onnx));
    result = TrainingMetrics::CommitResult::kPublished;
    return version;
  };
  // Cheap stale check first, so a stale session does not pay for the replay.
  {
    absl::StatusOr<int64_t> latest = LatestServing(model);
    const SessionConfig config = session->config();
    if (latest.ok() && config.state == "open" && *latest != config.base_version) {
      SessionSummary empty;
      absl::StatusOr<int64_t> stale = publish(config, empty);
      if (metrics_ != nullptr) metrics_->Commit(model, result);
      return stale.status();
    }
  }
  absl::StatusOr<SessionSummary> summary = session->Commit(publish);
  if (metrics_ != nullptr) metrics_->Commit(model, result);
  if (!summary.ok()) return summary.status();
  {
    absl::MutexLock lock(&mu_);
    sessions_.erase(session_id);
    committed_[session_id] = SessionListing{session_id, model, summary->config.base_version,
                                            summary->requests_accepted, "committed"};
  }
  if (metrics_ != nullptr) metrics_->RemoveSession(model, session_id);
  UpdateSessionGauge(model);
  return summary;
}

absl::Status TrainingManager::Abort(const std::string& session_id) {
  std::shared_ptr<Session> session;
  {
    absl::MutexLock lock(&mu_);
    auto it = sessions_.find(session_id);
    if (it != sessions_.end()) {
      session = it->second;
      sessions_.erase(it);
    } else if (committed_.erase(session_id) == 0) {
      return absl::NotFoundError(absl::StrCat("no training session \"", session_id, "\""));
    }
  }
  std::error_code ec;
  fs::remove_all(fs::path(options_.state_dir) / session_id, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("session ", session_id, ": cannot remove its state: ",
                                            ec.message()));
  }
  (void)FsyncDirectory(options_.state_dir);
  if (session != nullptr) {
    if (metrics_ != nullptr) metrics_->RemoveSession(session->model(), session_id);
    UpdateSessionGauge(session->model());
  }
  return absl::OkStatus();
}

std::vector<SessionListing> TrainingManager::List() {
  std::vector<std::shared_ptr<Session>> open;
  std::vector<SessionListing> out;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, s] : sessions_) open.push_back(s);
    for (const auto& [id, l] : committed_) out.push_back(l);
  }
  for (const auto& s : open) {
    const SessionConfig c = s->config();
    out.push_back(SessionListing{c.id, c.model, c.base_version, s->requests_accepted(), c.state});
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  return out;
}

absl::StatusOr<int64_t> TrainingManager::Rebase(const std::string& session_id) {
  ASSIGN_OR_RETURN(std::shared_ptr<Session> session, Find(session_id));
  absl::MutexLock publish_lock(&publish_mu_);  // serving does not move while we rebase
  ASSIGN_OR_RETURN(int64_t latest, LatestServing(session->model()));
  ASSIGN_OR_RETURN(std::shared_ptr<const Model> base, LoadBase(session->model(), latest));
  RETURN_IF_ERROR(session->Rebase(latest, std::move(base)));
  return latest;
}

absl::StatusOr<int64_t> TrainingManager::Rollback(const std::string& model, int64_t version) {
  if (version <= 0) return absl::InvalidArgumentError("rollback needs a version > 0");
  // Only models the server knows: the name becomes a path.
  RETURN_IF_ERROR(manager_->Versions(model).status());
  absl::MutexLock publish_lock(&publish_mu_);
  ASSIGN_OR_RETURN(std::string onnx, publisher_.ReadVersion(model, version));
  // Refuse a file that would not load rather than publish a broken version.
  RETURN_IF_ERROR(Model::LoadBytes(onnx).status());
  ASSIGN_OR_RETURN(int64_t published, PublishLocked(model, onnx));
  if (metrics_ != nullptr) metrics_->Rollback(model);
  return published;
}

absl::StatusOr<std::pair<int64_t, std::string>> TrainingManager::Export(const std::string& model,
                                                                        int64_t version) {
  if (version < 0) return absl::InvalidArgumentError("version must be >= 0");
  // Only models the server knows: the name becomes a path.
  ASSIGN_OR_RETURN(int64_t latest, LatestServing(model));
  if (version == 0) version = latest;
  ASSIGN_OR_RETURN(std::string onnx, publisher_.ReadVersion(model, version));
  return std::make_pair(version, std::move(onnx));
}

}  // namespace normserve
