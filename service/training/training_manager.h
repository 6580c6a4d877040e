// The training endpoint's domain layer: owns the sessions (bounded), recovers them from
// the state directory at start, and publishes new versions (commit, rollback) into the
// model repository before asking the ServableManager to switch serving to them.
#ifndef NORMSERVE_SERVICE_TRAINING_TRAINING_MANAGER_H_
#define NORMSERVE_SERVICE_TRAINING_TRAINING_MANAGER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "service/request_validation.h"
#include "service/servable_manager.h"
#include "service/training/int8_commit.h"
#include "service/training/session.h"
#include "service/training/training_metrics.h"
#include "service/training/version_publisher.h"

namespace normserve {

// Server-wide training settings (filled from flags in main.cc).
struct TrainingOptions {
  std::string state_dir = "state/training";
  // Quality gate defaults (a session's options may override them).
  int64_t min_values_per_channel = 64;
  double max_relative_sem = 0.1;
  // Default and largest samples a session keeps for its exact commit.
  int64_t max_samples = 4096;
  int max_sessions = 16;
  int intra_op_threads = 1;
  int64_t max_batch = 64;
  int64_t commit_cache_bytes = int64_t{512} << 20;  // CalibrationOptions::max_cached_bytes
  // Retention: after each publication (commit, rollback) version directories are pruned
  // except the versions serving or wanted by the model's version policy, the newest
  // `keep_versions` on disk, and every session's base version.
  int keep_versions = 5;
  // An int8 commit's quality gate (int8_commit.h).
  Int8GateOptions int8_gate;
  FaultHook fault_hook;  // test-only (session.h); empty in the server
  // Serving's scheduler, which runs Accumulate's observed passes (SessionEnv::scheduler),
  // and its budget; set by the server, null in tests that run passes inline.
  InferenceScheduler* scheduler = nullptr;
  ServableOptions servable;
};

// Per-session options as a client sends them (0: the server default).
struct SessionRequestOptions {
  int64_t min_values_per_channel = 0;
  double max_relative_sem = 0;
  double prior_strength = 0;
  int64_t max_samples = 0;
};

struct StartedSession {
  std::string id;
  std::string model;
  int64_t base_version = 0;
  std::vector<BnLayerInfo> layers;
};

struct SessionListing {
  std::string id;
  std::string model;
  int64_t base_version = 0;
  int64_t requests_accepted = 0;
  std::string state;
};

class TrainingManager {
 public:
  // `manager` and `metrics` (may be null) outlive this.
  TrainingManager(TrainingOptions options, std::string repository_root, ServableManager* manager,
                  TrainingMetrics* metrics);

  // Creates the state directory and recovers every session in it. Leftovers of
  // interrupted transitions are deleted: tombstones of aborts, staging directories of
  // starts, and open sessions without a sample log (an abort interrupted by an older
  // server). A session that cannot be recovered otherwise (bad manifest, base version
  // gone) is logged and skipped, never deleted. Every session restored counts against
  // max_sessions (more than that on disk: all restored, StartSession refused until fewer).
  absl::Status Recover();

  absl::StatusOr<StartedSession> StartSession(const std::string& model, int64_t version,
                                              const SessionRequestOptions& options,
                                              const std::string& requested_id);
  absl::StatusOr<AccumulateOutcome> Accumulate(const std::string& session_id,
                                               const std::string& request_id,
                                               absl::Span<const RequestTensor> inputs);
  absl::StatusOr<SessionSummary> Report(const std::string& session_id, bool exact);
  // The session's last layer-wise replay; answers while a commit of it runs.
  absl::StatusOr<ReplayProgress> Progress(const std::string& session_id);
  // Exact layer-wise statistics, stale-base check, gate (unless `force`), publication.
  // `precision`: "int8" publishes a QDQ version whose scales are calibrated on the kept
  // samples after the new statistics, gated against fp32 on held-out ones (int8_commit.h);
  // "fp32" a float version; "" the base version's kind (int8 when it has a float source).
  absl::StatusOr<SessionSummary> Commit(const std::string& session_id, bool force,
                                        const std::string& precision = "");
  absl::Status Abort(const std::string& session_id);
  std::vector<SessionListing> List();
  absl::StatusOr<int64_t> Rebase(const std::string& session_id);
  // Publishes version `version`'s file as a new version; returns the new number.
  absl::StatusOr<int64_t> Rollback(const std::string& model, int64_t version);
  // The ONNX bytes of `version` (0: latest serving) and the version resolved.
  absl::StatusOr<std::pair<int64_t, std::string>> Export(const std::string& model, int64_t version);

 private:
  absl::StatusOr<std::shared_ptr<Session>> Find(const std::string& id) ABSL_LOCKS_EXCLUDED(mu_);
  // The base model of `model` at `version`, the float network statistics are observed in:
  // an int8 version's float source, else the serving model, else the file on disk.
  absl::StatusOr<std::shared_ptr<const Model>> LoadBase(const std::string& model, int64_t version);
  // "int8" or "fp32" for a commit asked for `requested` on a session based on `version`;
  // INVALID_ARGUMENT when the model's config.json would not serve that kind of file.
  absl::StatusOr<std::string> CommitPrecision(const std::string& model, int64_t version,
                                              const std::string& requested);
  absl::StatusOr<int64_t> LatestServing(const std::string& model);
  // Publishes `onnx` (with an int8 version's `float_source`) and switches serving to it.
  absl::StatusOr<int64_t> PublishLocked(const std::string& model, const std::string& onnx,
                                        const std::string& float_source = "")
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(publish_mu_);
  // The retention policy (see TrainingOptions::keep_versions). Under publish_mu_, which
  // every change of serving or of a session's base holds, and never under a session lock.
  void PruneVersionsLocked(const std::string& model) ABSL_EXCLUSIVE_LOCKS_REQUIRED(publish_mu_);
  void UpdateDiskMetric(const std::string& model);
  // Renames a session directory to a fresh tombstone name; returns the tombstone.
  std::string TombstonePath(const std::string& id) const;
  void UpdateSessionGauge(const std::string& model) ABSL_LOCKS_EXCLUDED(mu_);
  SessionEnv Env() const;

  const TrainingOptions options_;
  ServableManager* const manager_;
  TrainingMetrics* const metrics_;
  const VersionPublisher publisher_;

  // Serialises publications (commit, rollback): version numbering and the stale-base
  // check must see one publication at a time. Taken before any session lock.
  absl::Mutex publish_mu_;

  absl::Mutex mu_;  // the session table only; never held across compute or I/O
  std::map<std::string, std::shared_ptr<Session>> sessions_ ABSL_GUARDED_BY(mu_);
  // Sessions committed (open ones are in sessions_ too until committed).
  std::map<std::string, SessionListing> committed_ ABSL_GUARDED_BY(mu_);
  // Ids being created (counted against the limit while their plan compiles), with the
  // model and base version they pin against pruning.
  std::map<std::string, std::pair<std::string, int64_t>> reserved_ ABSL_GUARDED_BY(mu_);
  // Ids whose directory is being renamed away by Abort: neither listed nor startable.
  std::set<std::string> aborting_ ABSL_GUARDED_BY(mu_);
};

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_TRAINING_TRAINING_MANAGER_H_
