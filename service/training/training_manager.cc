// Sessions table, recovery, commit/rollback publication, version retention.
#include "service/training/training_manager.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/status_macros.h"
#include "service/log.h"
#include "service/model_repository.h"

namespace normserve {
namespace fs = std::filesystem;
namespace {

constexpr char kManifestFile[] = "manifest";
constexpr char kLogFile[] = "samples.wal";
// Dot-names of the state directory (session ids cannot start with a dot): a session
// being created, and one aborted whose tree is not deleted yet.
constexpr char kStagingTag[] = ".creating.";
constexpr char kTombstoneTag[] = ".aborted.";

std::string RandomTag() {
  std::random_device rd;
  return absl::StrFormat("%08x%08x", rd(), rd());
}

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
  env.fault_hook = options_.fault_hook;
  env.scheduler = options_.scheduler;
  env.servable = options_.servable;
  return env;
}

std::string TrainingManager::TombstonePath(const std::string& id) const {
  return (fs::path(options_.state_dir) / absl::StrCat(".", id, kTombstoneTag, RandomTag()))
      .string();
}

void TrainingManager::UpdateDiskMetric(const std::string& model) {
  if (metrics_ != nullptr) metrics_->SetRepositoryDiskBytes(model, publisher_.DiskBytes(model));
}

absl::StatusOr<int64_t> TrainingManager::LatestServing(const std::string& model) {
  ASSIGN_OR_RETURN(std::vector<int64_t> versions, manager_->Versions(model));
  return versions.back();
}

absl::StatusOr<std::shared_ptr<const Model>> TrainingManager::LoadBase(const std::string& model,
                                                                       int64_t version) {
  std::error_code ec;
  const std::string float_source = publisher_.FloatSourcePath(model, version);
  if (fs::exists(float_source, ec)) return Model::LoadFile(float_source);
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
        for (const BnLayerInfo& l : (*s)->model().bn_layers())
          undefined += l.values_per_channel == 1;
        metrics_->SetRequestUndefinedLayers(info.name, undefined);
      }
    }
  }
  for (const ModelStatusInfo& info : manager_->List()) {
    if (const int n = publisher_.RemoveLeftovers(info.name); n > 0) {
      Log(LogLevel::kWarning, absl::StrCat("model ", info.name, ": deleted ", n,
                                           " leftovers of an interrupted publication or prune"));
    }
    UpdateDiskMetric(info.name);
  }
  std::vector<fs::path> dirs, leftovers;
  for (const auto& entry : fs::directory_iterator(options_.state_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name[0] == '.') {
      // Staging of an unfinished start, or tombstone of an abort past its rename.
      if (absl::StrContains(name, kStagingTag) || absl::StrContains(name, kTombstoneTag)) {
        leftovers.push_back(entry.path());
      }
      continue;
    }
    if (entry.is_directory()) dirs.push_back(entry.path());
  }
  for (const fs::path& p : leftovers) {
    fs::remove_all(p, ec);
    Log(LogLevel::kInfo,
        absl::StrCat("training state: deleted ", p.string(), " (interrupted start or abort)"));
  }
  std::sort(dirs.begin(), dirs.end());
  int restored_open = 0;
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
    if (config->id != dir.filename().string()) {
      Log(LogLevel::kError,
          absl::StrCat("training state ", dir.string(), ": manifest names session \"",
                       config->id.substr(0, 64), "\" (left on disk)"));
      continue;
    }
    if (config->state != "open") {
      // A commit interrupted between its manifest and deleting the log: finish it.
      fs::remove(dir / kLogFile, ec);
      absl::MutexLock lock(&mu_);
      committed_[config->id] =
          SessionListing{config->id, config->model, config->base_version, 0, config->state};
      continue;
    }
    if (!fs::exists(dir / kLogFile)) {
      // Every open session has its log from its start (it is staged with it); an open
      // manifest without one is what an abort racing a manifest rewrite left before
      // aborts became a rename: the session was aborted, never bring it back.
      const std::string tombstone = TombstonePath(config->id);
      if (::rename(dir.c_str(), tombstone.c_str()) == 0) {
        (void)FsyncDirectory(options_.state_dir);
        fs::remove_all(tombstone, ec);
        Log(LogLevel::kWarning, absl::StrCat("training session ", config->id,
                                             ": open manifest without a sample log (an interrupted "
                                             "abort); deleted"));
      }
      continue;
    }
    absl::StatusOr<std::shared_ptr<const Model>> base =
        LoadBase(config->model, config->base_version);
    absl::StatusOr<std::shared_ptr<Session>> session =
        base.ok() ? Session::Recover(*config, dir.string(), *base, Env())
                  : absl::StatusOr<std::shared_ptr<Session>>(base.status());
    if (!session.ok()) {
      Log(LogLevel::kError, absl::StrCat("training session ", config->id, ": cannot recover: ",
                                         session.status().message(), " (left on disk)"));
      continue;
    }
    Log(LogLevel::kInfo,
        absl::StrCat("training session ", config->id, " recovered: model ", config->model, " v",
                     config->base_version, ", ", (*session)->requests_accepted(), " requests"));
    {
      absl::MutexLock lock(&mu_);
      sessions_[config->id] = *session;
    }
    ++restored_open;
    UpdateSessionGauge(config->model);
  }
  if (restored_open > options_.max_sessions) {
    Log(LogLevel::kWarning,
        absl::StrCat("training: recovered ", restored_open, " open sessions, more than ",
                     "--training_max_sessions=", options_.max_sessions,
                     "; StartSession is refused until some are committed or aborted"));
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
    return absl::InvalidArgumentError(
        "session options must be finite and >= 0 (0: server default)");
  }
  if (o.max_samples > options_.max_samples) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_samples=", o.max_samples,
                     " exceeds the server limit --training_max_samples=", options_.max_samples));
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
        aborting_.count(config.id) || fs::exists(dir)) {
      return absl::AlreadyExistsError(absl::StrCat("training session \"", config.id, "\" exists"));
    }
    // sessions_ holds exactly the open sessions (a commit moves its session out), those
    // restored at start-up included; an abort frees its slot once its rename is done.
    if (static_cast<int>(sessions_.size() + reserved_.size() + aborting_.size()) >=
        options_.max_sessions) {
      if (metrics_ != nullptr) metrics_->Refused(config.model, TrainingMetrics::Refusal::kLimit);
      return absl::ResourceExhaustedError(
          absl::StrCat("at most --training_max_sessions=", options_.max_sessions,
                       " training sessions may be open; commit or abort one first"));
    }
    reserved_[config.id] = {config.model, config.base_version};
  }
  // The directory appears whole or not at all: built under a dot-name recovery deletes,
  // then renamed to the id (the commit point of a start).
  const std::string staging =
      (fs::path(options_.state_dir) / absl::StrCat(".", config.id, kStagingTag, RandomTag()))
          .string();
  bool renamed = false;
  auto materialize = [&]() -> absl::Status {
    // Pinned by reserved_ from here on; a prune that ran before we pinned it may have
    // retired it (it had stopped serving and was past --training_keep_versions).
    if (!fs::exists(publisher_.ModelPath(config.model, config.base_version))) {
      return absl::FailedPreconditionError(
          absl::StrCat("model ", config.model, " v", config.base_version,
                       " was retired meanwhile; start on a newer version"));
    }
    std::error_code ec;
    fs::create_directories(staging, ec);
    if (ec) return absl::InternalError(absl::StrCat("cannot create ", staging, ": ", ec.message()));
    RETURN_IF_ERROR(FaultPoint(options_.fault_hook, "start.staging_created"));
    RETURN_IF_ERROR(WriteFileAtomically(staging + "/" + kManifestFile, SerializeManifest(config)));
    ASSIGN_OR_RETURN(std::unique_ptr<SampleLog> log, SampleLog::Open(staging + "/" + kLogFile));
    log.reset();
    RETURN_IF_ERROR(FsyncDirectory(staging));
    RETURN_IF_ERROR(FaultPoint(options_.fault_hook, "start.staged"));
    if (::rename(staging.c_str(), dir.c_str()) != 0) {
      return absl::InternalError(
          absl::StrCat("cannot rename ", staging, " to ", dir, ": ", std::strerror(errno)));
    }
    renamed = true;
    RETURN_IF_ERROR(FsyncDirectory(options_.state_dir));
    return FaultPoint(options_.fault_hook, "start.renamed");
  };
  absl::StatusOr<std::shared_ptr<const Model>> base = LoadBase(config.model, config.base_version);
  absl::StatusOr<std::shared_ptr<Session>> session =
      base.ok() ? Session::Create(config, dir, *base, Env(), materialize)
                : absl::StatusOr<std::shared_ptr<Session>>(base.status());
  if (!session.ok()) {
    std::error_code ec;
    if (renamed) {
      const std::string tombstone = TombstonePath(config.id);
      if (::rename(dir.c_str(), tombstone.c_str()) == 0) fs::remove_all(tombstone, ec);
    } else {
      fs::remove_all(staging, ec);
    }
  }
  {
    absl::MutexLock lock(&mu_);
    reserved_.erase(config.id);
    if (session.ok()) sessions_[config.id] = *session;
  }
  if (!session.ok()) return session.status();
  UpdateSessionGauge(config.model);
  if (metrics_ != nullptr) {
    int undefined = 0;
    for (const BnLayerInfo& l : (*base)->bn_layers()) undefined += l.values_per_channel == 1;
    metrics_->SetRequestUndefinedLayers(config.model, undefined);
  }
  Log(LogLevel::kInfo, absl::StrCat("training session ", config.id, " started on ", config.model,
                                    " v", config.base_version));
  return StartedSession{config.id, config.model, config.base_version, (*base)->bn_layers()};
}

absl::StatusOr<AccumulateOutcome> TrainingManager::Accumulate(
    const std::string& session_id, const std::string& request_id,
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

absl::StatusOr<ReplayProgress> TrainingManager::Progress(const std::string& session_id) {
  ASSIGN_OR_RETURN(std::shared_ptr<Session> session, Find(session_id));
  return session->Progress();
}

absl::StatusOr<int64_t> TrainingManager::PublishLocked(const std::string& model,
                                                       const std::string& onnx,
                                                       const std::string& float_source) {
  ASSIGN_OR_RETURN(int64_t version, publisher_.Publish(model, onnx, float_source));
  absl::StatusOr<std::vector<ModelStatusInfo>> reloaded = manager_->Reload(model);
  if (!reloaded.ok()) {
    return absl::InternalError(
        absl::StrCat("published ", model, " v", version,
                     " but serving did not switch to it: ", reloaded.status().message()));
  }
  if (metrics_ != nullptr) {
    absl::StatusOr<int64_t> latest = LatestServing(model);
    if (latest.ok()) metrics_->SetServingVersion(model, *latest);
    metrics_->SetLastCommitNow(model);
  }
  Log(LogLevel::kInfo, absl::StrCat("training: published ", model, " v", version));
  return version;
}

absl::StatusOr<std::string> TrainingManager::CommitPrecision(const std::string& model,
                                                             int64_t version,
                                                             const std::string& requested) {
  if (!requested.empty() && requested != "fp32" && requested != "int8") {
    return absl::InvalidArgumentError(absl::StrCat(
        "precision \"", requested.substr(0, 32),
        "\" is not a commit precision: \"int8\" (a QDQ version calibrated on the session's "
        "samples), \"fp32\" (a float version; config.json's precision, e.g. bf16, says how it "
        "serves) or empty (the base version's kind)"));
  }
  std::error_code ec;
  const std::string want =
      !requested.empty()
          ? requested
          : (fs::exists(publisher_.FloatSourcePath(model, version), ec) ? "int8" : "fp32");
  // config.json's precision applies to every version of the model.
  ASSIGN_OR_RETURN(std::shared_ptr<const Servable> serving, manager_->Get(model, 0));
  const std::string& configured = serving->config.precision();
  if (want == "fp32" && configured == "int8") {
    return absl::InvalidArgumentError(
        absl::StrCat(model,
                     "'s config.json sets precision int8, which a float version cannot serve in; "
                     "commit with precision int8"));
  }
  if (want == "int8" && !configured.empty() && configured != "int8") {
    return absl::InvalidArgumentError(absl::StrCat(
        model, "'s config.json sets precision ", configured,
        ", which would serve an int8 version's QDQ file in ", configured,
        "; remove precision from config.json (a QDQ version then serves in int8) or commit "
        "with precision fp32"));
  }
  return want;
}

absl::StatusOr<SessionSummary> TrainingManager::Commit(const std::string& session_id, bool force,
                                                       const std::string& precision) {
  ASSIGN_OR_RETURN(std::shared_ptr<Session> session, Find(session_id));
  const std::string model = session->model();
  absl::MutexLock publish_lock(&publish_mu_);
  ASSIGN_OR_RETURN(const std::string commit_precision,
                   CommitPrecision(model, session->base_version(), precision));
  TrainingMetrics::CommitResult result = TrainingMetrics::CommitResult::kError;
  auto publish = [&](const SessionConfig& config, SessionSummary& summary,
                     absl::Span<const Tensor> samples) -> absl::StatusOr<int64_t> {
    ASSIGN_OR_RETURN(int64_t latest, LatestServing(model));
    if (latest != config.base_version) {
      result = TrainingMetrics::CommitResult::kStaleBase;
      return absl::FailedPreconditionError(
          absl::StrCat("session ", config.id, " is based on ", model, " v", config.base_version,
                       " but v", latest,
                       " is the latest serving version; Rebase the session (its samples are "
                       "replayed) or start a new one"));
    }
    if (!summary.gate_passed && !force) {
      result = TrainingMetrics::CommitResult::kGateFailed;
      return absl::FailedPreconditionError(absl::StrCat(
          "quality gate failed for session ", config.id, " (min values per channel ",
          config.min_values_per_channel, ", max relative SEM ", config.max_relative_sem,
          "; force publishes anyway): ", GateFailures(summary)));
    }
    ASSIGN_OR_RETURN(std::string onnx, summary.committed_model->SerializeOnnx());
    std::string float_source;
    if (commit_precision == "int8") {
      Int8GateOptions gate = options_.int8_gate;
      gate.intra_op_threads = options_.intra_op_threads;
      ASSIGN_OR_RETURN(Int8Commit int8, QuantizeForCommit(summary.committed_model, samples, gate));
      summary.int8 = int8.quality;
      if (metrics_ != nullptr) {
        metrics_->SetInt8Quality(model, int8.quality.top1_agreement,
                                 int8.quality.max_relative_logit_error,
                                 int8.quality.held_out_samples);
      }
      if (!int8.quality.gate_passed && !force) {
        result = TrainingMetrics::CommitResult::kGateFailed;
        return absl::FailedPreconditionError(absl::StrCat(
            "int8 quality gate failed for session ", config.id,
            " (force publishes anyway): ", Int8GateFailures(int8.quality, options_.int8_gate)));
      }
      float_source = std::move(onnx);
      onnx = std::move(int8.qdq_onnx);
    }
    publish_mu_.AssertHeld();  // taken above; runs under Session::Commit's lock too
    ASSIGN_OR_RETURN(int64_t version, PublishLocked(model, onnx, float_source));
    result = TrainingMetrics::CommitResult::kPublished;
    // Published but the session not yet marked: a restart finds it open on a stale base,
    // so a second Commit is refused and the version is published once.
    RETURN_IF_ERROR(FaultPoint(options_.fault_hook, "commit.published"));
    return version;
  };
  // Cheap stale check first, so a stale session does not pay for the replay.
  {
    absl::StatusOr<int64_t> latest = LatestServing(model);
    const SessionConfig config = session->config();
    if (latest.ok() && config.state == "open" && *latest != config.base_version) {
      SessionSummary empty;
      absl::StatusOr<int64_t> stale = publish(config, empty, {});
      if (metrics_ != nullptr) metrics_->Commit(model, result);
      return stale.status();
    }
  }
  absl::StatusOr<SessionSummary> summary = session->Commit(publish);
  if (metrics_ != nullptr) metrics_->Commit(model, result);
  if (!summary.ok()) {
    if (result == TrainingMetrics::CommitResult::kPublished) PruneVersionsLocked(model);
    return summary.status();
  }
  {
    absl::MutexLock lock(&mu_);
    // An Abort that ran after the commit took the session out of the table already:
    // it is gone, not committed.
    auto it = sessions_.find(session_id);
    if (it != sessions_.end() && it->second == session) {
      sessions_.erase(it);
      committed_[session_id] = SessionListing{session_id, model, summary->config.base_version,
                                              summary->requests_accepted, "committed"};
    }
  }
  PruneVersionsLocked(model);  // after the table update: the session no longer pins its base
  if (metrics_ != nullptr) metrics_->RemoveSession(model, session_id);
  UpdateSessionGauge(model);
  return summary;
}

absl::Status TrainingManager::Abort(const std::string& session_id) {
  std::shared_ptr<Session> session;
  SessionListing committed;
  {
    absl::MutexLock lock(&mu_);
    auto it = sessions_.find(session_id);
    if (it != sessions_.end()) {
      session = it->second;
      sessions_.erase(it);
    } else if (auto c = committed_.find(session_id); c != committed_.end()) {
      committed = c->second;
      committed_.erase(c);
    } else {
      return absl::NotFoundError(absl::StrCat("no training session \"", session_id, "\""));
    }
    // Until the directory is renamed away the id is neither listed nor startable.
    aborting_.insert(session_id);
  }
  const std::string dir = (fs::path(options_.state_dir) / session_id).string();
  const std::string tombstone = TombstonePath(session_id);
  absl::Status status;
  if (session != nullptr) {
    // Waits for a call in progress on the session (Rebase, Commit, Accumulate) and
    // turns every later one into NOT_FOUND.
    status = session->Abort(tombstone);
  } else {
    status = FaultPoint(options_.fault_hook, "abort.begin");
    if (status.ok() && ::rename(dir.c_str(), tombstone.c_str()) != 0) {
      status =
          absl::InternalError(absl::StrCat("session ", session_id, ": cannot rename its state ",
                                           dir, " to ", tombstone, ": ", std::strerror(errno)));
    }
    if (status.ok()) {
      absl::Status s = FaultPoint(options_.fault_hook, "abort.renamed");
      if (s.ok()) s = FsyncDirectory(options_.state_dir);
      if (!s.ok()) {
        Log(LogLevel::kError,
            absl::StrCat("training session ", session_id, " aborted: ", s.message()));
      }
    }
  }
  {
    absl::MutexLock lock(&mu_);
    aborting_.erase(session_id);
    if (!status.ok()) {  // nothing changed: the session is back as it was
      if (session != nullptr) {
        sessions_[session_id] = session;
      } else {
        committed_[session_id] = committed;
      }
    }
  }
  if (!status.ok()) return status;
  std::error_code ec;
  fs::remove_all(tombstone, ec);  // what is left is deleted by the next start-up
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
  // An int8 version's float source goes with it: sessions on the rollback observe in it.
  std::string float_source;
  if (absl::StatusOr<std::string> f = publisher_.ReadFloatSource(model, version); f.ok()) {
    float_source = *std::move(f);
  }
  ASSIGN_OR_RETURN(int64_t published, PublishLocked(model, onnx, float_source));
  if (metrics_ != nullptr) metrics_->Rollback(model);
  PruneVersionsLocked(model);
  return published;
}

void TrainingManager::PruneVersionsLocked(const std::string& model) {
  absl::StatusOr<std::vector<int64_t>> on_disk = publisher_.VersionsOnDisk(model);
  // Versions the model's policy wants given the disk as it is: exactly what any load,
  // ours (Reload under publish_mu_) or a concurrent poll or ReloadModel, may select.
  // Removing versions outside it does not change it (latest N keeps the newest,
  // specific keeps its list; under "all" it is everything, and nothing is pruned), so
  // no load ever targets a version being retired.
  absl::StatusOr<ModelOnDisk> disk = ModelRepository(publisher_.root()).ReadModel(model);
  if (!on_disk.ok() || !disk.ok()) {
    Log(LogLevel::kWarning,
        absl::StrCat("training: not pruning ", model, ": ",
                     (on_disk.ok() ? disk.status() : on_disk.status()).message()));
    return;
  }
  std::set<int64_t> keep;
  std::vector<int64_t> available;
  for (const VersionOnDisk& v : disk->versions) available.push_back(v.version);
  for (int64_t v : SelectVersions(disk->config.version_policy(), available)) keep.insert(v);
  if (absl::StatusOr<std::vector<int64_t>> serving = manager_->Versions(model); serving.ok()) {
    keep.insert(serving->begin(), serving->end());
  }
  const size_t newest = static_cast<size_t>(std::max(options_.keep_versions, 1));
  for (size_t i = on_disk->size() > newest ? on_disk->size() - newest : 0; i < on_disk->size();
       ++i) {
    keep.insert((*on_disk)[i]);
  }
  {
    // Every session's base (also those being started) must stay loadable for recovery.
    absl::MutexLock lock(&mu_);
    for (const auto& [id, s] : sessions_) {
      if (s->model() == model) keep.insert(s->base_version());
    }
    for (const auto& [id, r] : reserved_) {
      if (r.first == model) keep.insert(r.second);
    }
  }
  int pruned = 0;
  for (int64_t v : *on_disk) {
    if (keep.count(v) || !publisher_.PublishedHere(model, v)) continue;
    if (absl::Status s = publisher_.Retire(model, v); !s.ok()) {
      Log(LogLevel::kWarning,
          absl::StrCat("training: cannot prune ", model, " v", v, ": ", s.message()));
      continue;
    }
    ++pruned;
    if (absl::Status s = FaultPoint(options_.fault_hook, "prune.retired"); !s.ok()) break;
  }
  if (pruned > 0) {
    Log(LogLevel::kInfo, absl::StrCat("training: pruned ", pruned, " old versions of ", model));
    if (metrics_ != nullptr) metrics_->VersionsPruned(model, pruned);
  }
  UpdateDiskMetric(model);
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
