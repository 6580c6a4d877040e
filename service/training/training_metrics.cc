// Training metric families (names fixed by the deployment's dashboards and alerts).
#include "service/training/training_metrics.h"

#include <utility>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace normserve {
namespace {

prometheus::Family<prometheus::Counter>& Counter(prometheus::Registry& r, const char* name,
                                                 const char* help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(r);
}
prometheus::Family<prometheus::Gauge>& Gauge(prometheus::Registry& r, const char* name,
                                             const char* help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(r);
}

const char* RefusalName(TrainingMetrics::Refusal r) {
  switch (r) {
    case TrainingMetrics::Refusal::kNonFiniteInput:
      return "non_finite_input";
    case TrainingMetrics::Refusal::kNonFiniteActivation:
      return "non_finite_activation";
    case TrainingMetrics::Refusal::kInvalidInput:
      return "invalid_input";
    case TrainingMetrics::Refusal::kLimit:
      return "limit";
  }
  return "invalid_input";
}

const char* CommitName(TrainingMetrics::CommitResult r) {
  switch (r) {
    case TrainingMetrics::CommitResult::kPublished:
      return "published";
    case TrainingMetrics::CommitResult::kGateFailed:
      return "gate_failed";
    case TrainingMetrics::CommitResult::kStaleBase:
      return "stale_base";
    case TrainingMetrics::CommitResult::kError:
      return "error";
  }
  return "error";
}

}  // namespace

TrainingMetrics::TrainingMetrics(std::shared_ptr<prometheus::Registry> registry)
    : registry_(std::move(registry)),
      requests_(
          Counter(*registry_, "normserve_training_requests_total",
                  "Training requests (samples) by session and result (accepted, duplicate).")),
      refused_(Counter(*registry_, "normserve_training_refused_total",
                       "Training requests refused whole, by reason.")),
      values_min_(Gauge(*registry_, "normserve_training_values_per_channel_min",
                        "Smallest number of values accumulated per channel of a BN layer.")),
      rsem_max_(Gauge(*registry_, "normserve_training_relative_sem_max",
                      "Largest relative standard error of the mean over a layer's channels.")),
      rsem_mean_(Gauge(*registry_, "normserve_training_relative_sem_mean",
                       "Mean relative standard error of the mean over a layer's channels.")),
      drift_mean_(Gauge(*registry_, "normserve_training_drift_mean_shift",
                        "Mean |mu_new - mu_old| / sigma_old over a layer's channels.")),
      drift_logvar_(Gauge(*registry_, "normserve_training_drift_log_var_ratio",
                          "Mean |log(var_new / var_old)| over a layer's channels.")),
      drift_kl_(Gauge(*registry_, "normserve_training_drift_kl",
                      "Mean Gaussian KL(new || old) over a layer's channels.")),
      undefined_layers_(Gauge(*registry_, "normserve_training_request_undefined_layers",
                              "BN layers with 1 value per channel per batch-1 request.")),
      gate_passed_(Gauge(*registry_, "normserve_training_gate_passed",
                         "1 when the session's one-pass statistics pass the quality gate.")),
      sessions_(Gauge(*registry_, "normserve_training_sessions", "Open training sessions.")),
      commits_(
          Counter(*registry_, "normserve_training_commits_total", "Commit attempts by result.")),
      rollbacks_(Counter(*registry_, "normserve_training_rollbacks_total", "Rollbacks published.")),
      serving_version_(Gauge(*registry_, "normserve_training_serving_version",
                             "Latest serving version of the model.")),
      last_commit_(Gauge(*registry_, "normserve_training_last_commit_timestamp_seconds",
                         "Unix time of the last published commit or rollback.")),
      int8_agreement_(Gauge(*registry_, "normserve_training_int8_top1_agreement",
                            "Last int8 commit: held-out samples whose int8 top-1 class equals "
                            "fp32's, as a fraction.")),
      int8_logit_error_(Gauge(*registry_, "normserve_training_int8_max_relative_logit_error",
                              "Last int8 commit: largest max|int8 - fp32| / max|fp32| of an "
                              "output row over the held-out samples.")),
      int8_held_out_(Gauge(*registry_, "normserve_training_int8_held_out_samples",
                           "Last int8 commit: held-out samples the two figures come from.")),
      repository_disk_bytes_(Gauge(*registry_, "normserve_repository_disk_bytes",
                                   "Bytes of files under the model's repository directory, "
                                   "measured after each publication and prune.")),
      versions_pruned_(Counter(*registry_, "normserve_training_versions_pruned_total",
                               "Version directories removed by the retention policy.")),
      torn_tails_(Counter(*registry_, "normserve_training_wal_torn_tails_total",
                          "Session logs whose incomplete last record was truncated at recovery.")
                      .Add({})),
      fsync_failures_(
          Counter(*registry_, "normserve_training_wal_fsync_failures_total",
                  "Sample log appends that failed to write or fsync (not acknowledged).")
              .Add({})),
      syncs_(Counter(*registry_, "normserve_training_wal_syncs_total",
                     "Sample log fdatasyncs; accepted requests per sync is the group commit's "
                     "batching.")
                 .Add({})),
      live_mean_(
          Gauge(*registry_, "normserve_live_drift_mean_shift",
                "Live traffic: mean |mu - mu_frozen| / sigma_frozen over a layer's channels.")),
      live_logvar_(Gauge(*registry_, "normserve_live_drift_log_var_ratio",
                         "Live traffic: mean |log(var / var_frozen)| over a layer's channels.")),
      live_kl_(Gauge(*registry_, "normserve_live_drift_kl",
                     "Live traffic: mean Gaussian KL(live || frozen) over a layer's channels.")),
      live_requests_(Counter(*registry_, "normserve_live_drift_requests_total",
                             "Serving requests sampled for the live drift watch, by result.")) {}

void TrainingMetrics::RequestsAccepted(const std::string& model, const std::string& session,
                                       int64_t n) {
  prometheus::Counter& c =
      requests_.Add({{"model", model}, {"session", session}, {"result", "accepted"}});
  c.Increment(static_cast<double>(n));
  absl::MutexLock lock(&mu_);
  sessions_series_[{model, session}].counters.insert(&c);
}

void TrainingMetrics::RequestDuplicate(const std::string& model, const std::string& session) {
  prometheus::Counter& c =
      requests_.Add({{"model", model}, {"session", session}, {"result", "duplicate"}});
  c.Increment();
  absl::MutexLock lock(&mu_);
  sessions_series_[{model, session}].counters.insert(&c);
}

void TrainingMetrics::Refused(const std::string& model, Refusal reason) {
  refused_.Add({{"model", model}, {"reason", RefusalName(reason)}}).Increment();
}

void TrainingMetrics::SetSessionQuality(const std::string& model, const std::string& session,
                                        const std::vector<LayerQuality>& layers, bool gate_passed) {
  absl::MutexLock lock(&mu_);
  SessionSeries& s = sessions_series_[{model, session}];
  for (const LayerQuality& q : layers) {
    const Labels l = {{"model", model}, {"session", session}, {"layer", q.layer}};
    const std::pair<prometheus::Family<prometheus::Gauge>*, double> values[] = {
        {&values_min_, q.values_per_channel_min}, {&rsem_max_, q.relative_sem_max},
        {&rsem_mean_, q.relative_sem_mean},       {&drift_mean_, q.drift_mean_shift},
        {&drift_logvar_, q.drift_log_var_ratio},  {&drift_kl_, q.drift_kl}};
    for (const auto& [family, value] : values) {
      prometheus::Gauge& g = family->Add(l);
      g.Set(value);
      s.gauges.insert({family, &g});
    }
  }
  prometheus::Gauge& g = gate_passed_.Add({{"model", model}, {"session", session}});
  g.Set(gate_passed ? 1 : 0);
  s.gauges.insert({&gate_passed_, &g});
}

void TrainingMetrics::RemoveSession(const std::string& model, const std::string& session) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_series_.find({model, session});
  if (it == sessions_series_.end()) return;
  for (prometheus::Counter* c : it->second.counters) requests_.Remove(c);
  for (const auto& [family, gauge] : it->second.gauges) family->Remove(gauge);
  sessions_series_.erase(it);
}

void TrainingMetrics::SetOpenSessions(const std::string& model, int n) {
  sessions_.Add({{"model", model}}).Set(n);
}

void TrainingMetrics::SetRequestUndefinedLayers(const std::string& model, int n) {
  undefined_layers_.Add({{"model", model}}).Set(n);
}

void TrainingMetrics::Commit(const std::string& model, CommitResult result) {
  commits_.Add({{"model", model}, {"result", CommitName(result)}}).Increment();
}

void TrainingMetrics::Rollback(const std::string& model) {
  rollbacks_.Add({{"model", model}}).Increment();
}

void TrainingMetrics::SetServingVersion(const std::string& model, int64_t version) {
  serving_version_.Add({{"model", model}}).Set(static_cast<double>(version));
}

void TrainingMetrics::SetLastCommitNow(const std::string& model) {
  last_commit_.Add({{"model", model}}).Set(absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()));
}

void TrainingMetrics::SetInt8Quality(const std::string& model, double top1_agreement,
                                     double max_relative_logit_error, int64_t held_out_samples) {
  int8_agreement_.Add({{"model", model}}).Set(top1_agreement);
  int8_logit_error_.Add({{"model", model}}).Set(max_relative_logit_error);
  int8_held_out_.Add({{"model", model}}).Set(static_cast<double>(held_out_samples));
}

void TrainingMetrics::SetRepositoryDiskBytes(const std::string& model, int64_t bytes) {
  repository_disk_bytes_.Add({{"model", model}}).Set(static_cast<double>(bytes));
}

void TrainingMetrics::VersionsPruned(const std::string& model, int n) {
  versions_pruned_.Add({{"model", model}}).Increment(n);
}

void TrainingMetrics::WalTornTail() { torn_tails_.Increment(); }
void TrainingMetrics::WalFsyncFailure() { fsync_failures_.Increment(); }
void TrainingMetrics::WalSynced() { syncs_.Increment(); }

void TrainingMetrics::SetLiveDrift(const std::string& model, const std::vector<LiveDrift>& layers) {
  for (const LiveDrift& d : layers) {
    const Labels l = {{"model", model}, {"layer", d.layer}};
    live_mean_.Add(l).Set(d.mean_shift);
    live_logvar_.Add(l).Set(d.log_var_ratio);
    live_kl_.Add(l).Set(d.kl);
  }
}

void TrainingMetrics::LiveDriftRequest(const std::string& model, bool observed) {
  live_requests_.Add({{"model", model}, {"result", observed ? "observed" : "dropped"}}).Increment();
}

}  // namespace normserve
