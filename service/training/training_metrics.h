// Prometheus series of the training endpoint, on the serving registry (one /metrics).
// Labels are bounded: model names come from the repository, session ids from sessions
// the server holds (at most --training_max_sessions, series removed on commit/abort),
// layer names from the model; per-channel values go in Report, never in labels.
#ifndef NORMSERVE_SERVICE_TRAINING_TRAINING_METRICS_H_
#define NORMSERVE_SERVICE_TRAINING_TRAINING_METRICS_H_

#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"

namespace normserve {

// One layer's quality and drift, as exported (same values as Report's LayerReport).
struct LayerQuality {
  std::string layer;
  double values_per_channel_min = 0;
  double relative_sem_max = 0;
  double relative_sem_mean = 0;
  double drift_mean_shift = 0;
  double drift_log_var_ratio = 0;
  double drift_kl = 0;
};

struct LiveDrift {
  std::string layer;
  double mean_shift = 0;
  double log_var_ratio = 0;
  double kl = 0;
};

class TrainingMetrics {
 public:
  explicit TrainingMetrics(std::shared_ptr<prometheus::Registry> registry);

  enum class Refusal { kNonFiniteInput, kNonFiniteActivation, kInvalidInput, kLimit };
  enum class CommitResult { kPublished, kGateFailed, kStaleBase, kError };

  void RequestsAccepted(const std::string& model, const std::string& session, int64_t n);
  void RequestDuplicate(const std::string& model, const std::string& session);
  void Refused(const std::string& model, Refusal reason);
  void SetSessionQuality(const std::string& model, const std::string& session,
                         const std::vector<LayerQuality>& layers, bool gate_passed);
  // Drops every series of the session (committed, aborted).
  void RemoveSession(const std::string& model, const std::string& session);
  void SetOpenSessions(const std::string& model, int n);
  void SetRequestUndefinedLayers(const std::string& model, int n);
  void Commit(const std::string& model, CommitResult result);
  void Rollback(const std::string& model);
  void SetServingVersion(const std::string& model, int64_t version);
  void SetLastCommitNow(const std::string& model);
  // The last int8 commit attempt's measurement against fp32 (int8_commit.h), published
  // or refused by its gate.
  void SetInt8Quality(const std::string& model, double top1_agreement,
                      double max_relative_logit_error, int64_t held_out_samples);
  // Bytes of regular files under <repository>/<model>/ (every version, config, leftovers).
  void SetRepositoryDiskBytes(const std::string& model, int64_t bytes);
  void VersionsPruned(const std::string& model, int n);
  void WalTornTail();
  void WalFsyncFailure();
  // One fdatasync of a session log, however many records it made durable.
  void WalSynced();

  void SetLiveDrift(const std::string& model, const std::vector<LiveDrift>& layers);
  void LiveDriftRequest(const std::string& model, bool observed);

 private:
  using Labels = std::map<std::string, std::string>;
  struct SessionSeries {
    std::set<prometheus::Counter*> counters;
    std::set<std::pair<prometheus::Family<prometheus::Gauge>*, prometheus::Gauge*>> gauges;
  };

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Counter>& refused_;
  prometheus::Family<prometheus::Gauge>& values_min_;
  prometheus::Family<prometheus::Gauge>& rsem_max_;
  prometheus::Family<prometheus::Gauge>& rsem_mean_;
  prometheus::Family<prometheus::Gauge>& drift_mean_;
  prometheus::Family<prometheus::Gauge>& drift_logvar_;
  prometheus::Family<prometheus::Gauge>& drift_kl_;
  prometheus::Family<prometheus::Gauge>& undefined_layers_;
  prometheus::Family<prometheus::Gauge>& gate_passed_;
  prometheus::Family<prometheus::Gauge>& sessions_;
  prometheus::Family<prometheus::Counter>& commits_;
  prometheus::Family<prometheus::Counter>& rollbacks_;
  prometheus::Family<prometheus::Gauge>& serving_version_;
  prometheus::Family<prometheus::Gauge>& last_commit_;
  prometheus::Family<prometheus::Gauge>& int8_agreement_;
  prometheus::Family<prometheus::Gauge>& int8_logit_error_;
  prometheus::Family<prometheus::Gauge>& int8_held_out_;
  prometheus::Family<prometheus::Gauge>& repository_disk_bytes_;
  prometheus::Family<prometheus::Counter>& versions_pruned_;
  prometheus::Counter& torn_tails_;
  prometheus::Counter& fsync_failures_;
  prometheus::Counter& syncs_;
  prometheus::Family<prometheus::Gauge>& live_mean_;
  prometheus::Family<prometheus::Gauge>& live_logvar_;
  prometheus::Family<prometheus::Gauge>& live_kl_;
  prometheus::Family<prometheus::Counter>& live_requests_;

  absl::Mutex mu_;
  // Series created for a session, so RemoveSession can drop exactly them.
  std::map<std::pair<std::string, std::string>, SessionSeries> sessions_series_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_TRAINING_TRAINING_METRICS_H_
