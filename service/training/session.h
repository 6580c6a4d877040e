// One training session: the base model version it accumulates against, its live
// one-pass statistics (per BN layer LayerAccumulators, fed by the observed plan), the
// request ids it has applied, and the accepted samples kept for the exact layer-wise
// commit, all mirrored in a durable per-session directory (manifest + sample log).
#ifndef NORMSERVE_SERVICE_TRAINING_SESSION_H_
#define NORMSERVE_SERVICE_TRAINING_SESSION_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "kernels/engine.h"
#include "kernels/layerwise_calibration.h"
#include "kernels/model.h"
#include "kernels/stats_accumulator.h"
#include "service/inference_scheduler.h"
#include "service/request_validation.h"
#include "service/servable.h"
#include "service/training/int8_commit.h"
#include "service/training/sample_log.h"
#include "service/training/training_metrics.h"

namespace normserve {

// What a session was started with; persisted in its manifest.
struct SessionConfig {
  std::string id;
  std::string model;
  int64_t base_version = 0;
  int64_t min_values_per_channel = 0;
  double max_relative_sem = 0;
  double prior_strength = 0;
  int64_t max_samples = 0;
  std::string state = "open";  // "open" | "committed"
  int64_t published_version = 0;
};

std::string SerializeManifest(const SessionConfig& config);
absl::StatusOr<SessionConfig> ParseManifest(const std::string& text);

// Statistics of one layer as Report and the metrics show them.
struct LayerSummary {
  BnLayerInfo info;
  int64_t requests = 0;
  int64_t values_per_channel = 0;
  double max_relative_sem = 0;  // +inf while undefined (fewer than 2 requests)
  double mean_relative_sem = 0;
  StatsDrift drift;
  bool gate_passed = false;
  std::string gate_reason;
  std::vector<double> mean, variance, standard_error, relative_standard_error;
  BnStatistics frozen;
};

struct SessionSummary {
  SessionConfig config;
  int64_t requests_accepted = 0;
  int64_t requests_refused = 0;
  int64_t samples_kept = 0;
  bool exact = false;
  bool gate_passed = false;
  std::vector<LayerSummary> layers;
  // Set with exact: the model carrying the committed statistics.
  std::shared_ptr<const Model> committed_model;
  // Set by an int8 commit (int8_commit.h): the quantized version against fp32.
  std::optional<Int8Quality> int8;
};

// The gate: every layer has >= min values per channel and max relative SEM <= limit.
void ApplyGate(int64_t min_values_per_channel, double max_relative_sem, SessionSummary* summary);
// "layer \"bn1\": 8 values per channel < 64; ..." for every failing layer.
std::string GateFailures(const SessionSummary& summary);

// Summary of one accumulator against the frozen statistics (gate not applied).
LayerSummary SummarizeLayer(const BnLayerInfo& info, const LayerAccumulator& acc,
                            const BnStatistics& frozen);

// The last layer-wise replay of a session (an exact Report or a Commit), readable while it
// runs: the replay holds the session's lock for seconds on a large model, and an operator
// waiting on a commit wants to see it move.
struct ReplayProgress {
  bool running = false;
  std::string operation;  // "commit" | "report"; empty before the first replay
  CalibrationProgress calibration;
  absl::Time started = absl::InfinitePast();
  absl::Time finished = absl::InfinitePast();  // InfinitePast while running
};

struct AccumulateOutcome {
  bool duplicate = false;
  int64_t requests_accepted = 0;
};

// Test-only fault injection: called with the name of each durable step of a state
// transition ("rebase.manifest_written", ...; docs/training.md lists them) right after
// the step. A non-OK answer fails the transition there, as an I/O error would; a hook
// that throws stops it dead, as a crash would (the test then recovers the state dir).
using FaultHook = std::function<absl::Status(absl::string_view step)>;
absl::Status FaultPoint(const FaultHook& hook, absl::string_view step);

struct SessionEnv {
  // Without a scheduler: the threads of each observed pass, run on the caller's thread.
  int intra_op_threads = 1;
  // With one, Accumulate's observed pass is queued with serving's requests (one FIFO, one
  // core budget), as a fixed stream of intra_op_threads whose contexts are made at
  // session start (`servable`: cores, max_streams). One thread count, so the statistics
  // never depend on which stream ran a request. May be null (tests, tools).
  InferenceScheduler* scheduler = nullptr;
  ServableOptions servable;
  int64_t max_batch = 64;
  int64_t commit_cache_bytes = int64_t{512} << 20;  // CalibrationOptions::max_cached_bytes
  TrainingMetrics* metrics = nullptr;               // may be null
  FaultHook fault_hook;                             // empty outside tests
};

// Life cycle, all transitions under the session's mutex: open -> committed (Commit),
// open|committed -> aborted (Abort; terminal). Every call observes the state it runs in:
// on an aborted session every call answers NOT_FOUND, on a committed one Accumulate,
// Commit and Rebase answer FAILED_PRECONDITION. The directory is only ever written under
// the mutex by a call that checked the state, so nothing writes into it once aborted.
class Session {
 public:
  // A new session on `base`: compiles the observed plan first, then runs `materialize`
  // (which makes `dir` exist whole; empty: the caller made it), then opens the log.
  static absl::StatusOr<std::shared_ptr<Session>> Create(
      SessionConfig config, std::string dir, std::shared_ptr<const Model> base, SessionEnv env,
      const std::function<absl::Status()>& materialize = {});
  // Rebuilds a session from `dir`: replays the sample log through `base`. A torn tail is
  // truncated and counted; a corrupt record marks the session corrupt (DATA_LOSS on use).
  static absl::StatusOr<std::shared_ptr<Session>> Recover(SessionConfig config, std::string dir,
                                                          std::shared_ptr<const Model> base,
                                                          SessionEnv env);

  const std::string& id() const { return id_; }
  const std::string& model() const { return model_; }
  const std::string& dir() const { return dir_; }

  // Validates, computes the per-sample moments of every BN layer and encodes the record
  // outside the lock, then under it writes the record to the log, waits until a sync
  // makes it durable (group commit: one fdatasync covers every record written before it,
  // run by a waiter with the lock released) and merges in log order. Refusals are counted.
  absl::StatusOr<AccumulateOutcome> Accumulate(const std::string& request_id,
                                               absl::Span<const RequestTensor> inputs);

  // Live (one-pass) statistics, or with `exact` the layer-wise replay of the samples.
  absl::StatusOr<SessionSummary> Report(bool exact) ABSL_LOCKS_EXCLUDED(mu_);

  // For Commit: holds the session lock while `publish` runs on the exact summary (and the
  // kept samples, one per accepted request in accept order, for an int8 commit's scales),
  // so no Accumulate slips in between the replay and the publication. `publish` returns
  // the published version; on success the session is marked committed (manifest
  // rewritten, samples dropped).
  using PublishFn = std::function<absl::StatusOr<int64_t>(const SessionConfig&, SessionSummary&,
                                                          absl::Span<const Tensor> samples)>;
  absl::StatusOr<SessionSummary> Commit(const PublishFn& publish) ABSL_LOCKS_EXCLUDED(mu_);

  // Moves the session onto `base` at `version`: replays the kept samples on it, then
  // rewrites the manifest (temp + fsync + rename), then swaps the in-memory state; a
  // failure before the rename leaves the session on its old base, on disk and in memory.
  absl::Status Rebase(int64_t version, std::shared_ptr<const Model> base) ABSL_LOCKS_EXCLUDED(mu_);

  // Terminal: renames the directory to `tombstone` (one atomic step: a crash leaves the
  // session whole or gone) and marks the session aborted. NOT_FOUND if already aborted.
  // On a failed rename nothing changed and the session stays usable. The caller deletes
  // the tombstone.
  absl::Status Abort(const std::string& tombstone) ABSL_LOCKS_EXCLUDED(mu_);

  // The version the session is based on; lock-free (the retention policy reads it while
  // a long Report may hold the session's lock). Changes only under the publish lock.
  int64_t base_version() const { return base_version_.load(std::memory_order_acquire); }

  // Never waits for the session's lock (a replay in progress holds it).
  ReplayProgress Progress() const ABSL_LOCKS_EXCLUDED(progress_mu_);

  SessionConfig config() const ABSL_LOCKS_EXCLUDED(mu_);
  int64_t requests_accepted() const ABSL_LOCKS_EXCLUDED(mu_);
  bool open() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // Everything tied to one base version; replaced whole by Rebase.
  struct Base {
    std::shared_ptr<const Model> model;
    std::shared_ptr<const CompiledModel> observed;
    // With a scheduler: `observed` as a servable the scheduler runs.
    std::shared_ptr<const Servable> queued;
    std::vector<BnStatistics> frozen;  // per bn_layers() entry
    uint64_t generation = 0;
  };
  struct Moments {
    std::vector<std::vector<ChannelMoments>> per_layer;  // [layer][sample]
  };
  // What an Accumulate waits on; on its stack, filled by the sync's leader under mu_.
  struct WalTicket {
    bool done = false;
    absl::Status status;
    int64_t requests_accepted = 0;
  };
  // A record written to the log, not yet known durable, not applied, not acknowledged.
  struct PendingRecord {
    std::string request_id;
    int64_t samples = 0;
    Moments moments;
    Tensor input;
    int64_t log_end = 0;  // the log's written size after this record
    WalTicket* ticket = nullptr;
  };

  Session(SessionConfig config, std::string dir, SessionEnv env);
  static absl::StatusOr<std::shared_ptr<const Base>> MakeBase(std::shared_ptr<const Model> model,
                                                              const SessionEnv& env,
                                                              uint64_t generation);
  // Runs the observed plan on `inputs`; NOT finite moments are an error.
  // `queue`: through the scheduler when the session has one (Accumulate); replays run on
  // the caller's thread.
  absl::StatusOr<Moments> ComputeMoments(const Base& base, absl::Span<const Tensor> inputs,
                                         bool queue = false);
  void MergeLocked(const Moments& moments) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The group commit's leader: syncs the log with mu_ released, then applies (or on a
  // failed sync refuses) every pending record the sync covered, in log order.
  void SyncPendingLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Before anything that replaces the log, the base or the samples (Commit, Rebase,
  // Abort): no record left pending, no sync running; new writers wait meanwhile.
  void DrainPendingLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The live accumulators of every kept sample replayed through `base`.
  absl::StatusOr<std::vector<LayerAccumulator>> ReplayLocked(const Base& base)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  SessionSummary LiveSummaryLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `operation` names the replay in Progress().
  absl::StatusOr<SessionSummary> ExactSummaryLocked(const std::string& operation) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ExportMetricsLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status UsableLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::unique_ptr<ExecutionContext> TakeContext(const Base& base);
  void ReturnContext(const Base& base, std::unique_ptr<ExecutionContext> ctx);

  const std::string id_;
  const std::string model_;
  const std::string dir_;
  const SessionEnv env_;

  mutable absl::Mutex mu_;
  SessionConfig config_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<const Base> base_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<SampleLog> log_ ABSL_GUARDED_BY(mu_);
  std::vector<LayerAccumulator> live_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> request_ids_ ABSL_GUARDED_BY(mu_);
  std::vector<Tensor> samples_ ABSL_GUARDED_BY(mu_);  // one per accepted record
  int64_t requests_accepted_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t requests_refused_ ABSL_GUARDED_BY(mu_) = 0;
  // Set by recovery on a checksum mismatch: "<file> at offset N: reason".
  std::string corrupt_ ABSL_GUARDED_BY(mu_);
  bool aborted_ ABSL_GUARDED_BY(mu_) = false;
  // Group commit state: records written but not yet synced, in log order.
  std::deque<PendingRecord> pending_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> pending_ids_ ABSL_GUARDED_BY(mu_);
  int64_t pending_samples_ ABSL_GUARDED_BY(mu_) = 0;
  bool syncing_ ABSL_GUARDED_BY(mu_) = false;  // a leader is in SyncData, mu_ released
  int draining_ ABSL_GUARDED_BY(mu_) = 0;      // DrainPendingLocked callers waiting
  std::atomic<int64_t> base_version_{0};       // mirrors config_.base_version

  // Written by the replay (under mu_ too), read by Progress() without mu_.
  mutable absl::Mutex progress_mu_;
  mutable ReplayProgress progress_ ABSL_GUARDED_BY(progress_mu_);

  // Execution contexts of the current base's observed plan, reused across calls.
  absl::Mutex pool_mu_;
  uint64_t pool_generation_ ABSL_GUARDED_BY(pool_mu_) = 0;
  std::vector<std::unique_ptr<ExecutionContext>> pool_ ABSL_GUARDED_BY(pool_mu_);
};

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_TRAINING_SESSION_H_
