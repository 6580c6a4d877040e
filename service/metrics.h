// Prometheus metrics of the server, exposed over HTTP by prometheus-cpp's Exposer.
// Names follow the Prometheus conventions (base units, _total counters, _seconds
// histograms) so `promtool check metrics` has nothing to say.
#ifndef NORMSERVE_SERVICE_METRICS_H_
#define NORMSERVE_SERVICE_METRICS_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace normserve {

// The series of one model version, resolved once (Triton's MetricModelReporter) so the
// request path does not look families up under the registry mutex a /metrics scrape
// holds. Series are still created on first use, so /metrics shows exactly what it did.
class ModelMetrics {
 public:
  ModelMetrics(prometheus::Family<prometheus::Counter>* requests,
               prometheus::Family<prometheus::Histogram>* request_duration,
               prometheus::Family<prometheus::Histogram>* queue_duration,
               prometheus::Family<prometheus::Histogram>* compute_duration, std::string model,
               std::string version);
  ModelMetrics(const ModelMetrics&) = delete;
  ModelMetrics& operator=(const ModelMetrics&) = delete;

  void RequestFinished(absl::StatusCode code, absl::Duration duration);
  void ObserveQueue(absl::Duration d);
  void ObserveCompute(absl::Duration d);

 private:
  // The series itself, added to `family` on the first call (Family::Add is idempotent,
  // so a race only makes two threads find the same series).
  prometheus::Histogram& Histogram(prometheus::Family<prometheus::Histogram>* family,
                                   std::atomic<prometheus::Histogram*>* slot);

  prometheus::Family<prometheus::Counter>* const requests_;
  prometheus::Family<prometheus::Histogram>* const request_duration_;
  prometheus::Family<prometheus::Histogram>* const queue_duration_;
  prometheus::Family<prometheus::Histogram>* const compute_duration_;
  const std::string model_;
  const std::string version_;
  // By absl::StatusCode (0..16, the canonical codes); anything else goes to UNKNOWN.
  std::array<std::atomic<prometheus::Counter*>, 17> by_code_{};
  std::atomic<prometheus::Histogram*> request_duration_series_{nullptr};
  std::atomic<prometheus::Histogram*> queue_duration_series_{nullptr};
  std::atomic<prometheus::Histogram*> compute_duration_series_{nullptr};
};

class Metrics {
 public:
  Metrics();
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // Serves /metrics on `address` ("0.0.0.0:8002"; port 0 picks a free one). Errors name
  // the address.
  absl::Status StartExposer(const std::string& address);
  // Stops serving /metrics (waits for a scrape in progress); before what collectables
  // read is destroyed.
  void StopExposer() { exposer_.reset(); }
  // The port the exposer listens on, 0 when not started.
  int port() const;

  void RequestStarted();
  // Called when a request ends (RequestFinished on the returned handles does not count
  // the in-flight gauge down).
  void RequestEnded();
  // The handles of a serving version, made when it started serving (SetModelVersions);
  // for a version no longer serving, fresh ones. Never null.
  std::shared_ptr<ModelMetrics> ForModel(const std::string& model, int64_t version);
  // The handles for requests that never reached a servable (unknown model): labels are
  // empty, so a client cannot mint label values.
  std::shared_ptr<ModelMetrics> Unresolved() { return unresolved_; }
  void ModelLoad(bool ok);
  // Publishes normserve_model_info{model,version,precision} = 1 for exactly `versions`
  // (precisions[i] is versions[i]'s; "fp32" where missing), and makes their per-request
  // handles.
  void SetModelVersions(const std::string& model, const std::vector<int64_t>& versions,
                        const std::vector<std::string>& precisions = {});

  // The text exposition format of every metric (what /metrics serves).
  std::string Serialize() const;

  // The registry /metrics serves, for components that add their own families (training).
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }
  // Served next to the registry: families read from their source at scrape time (the
  // plan caches). Kept alive here.
  void AddCollectable(std::shared_ptr<prometheus::Collectable> collectable);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& request_duration_;
  prometheus::Family<prometheus::Histogram>& compute_duration_;
  prometheus::Family<prometheus::Histogram>& queue_duration_;
  prometheus::Gauge& inflight_;
  prometheus::Family<prometheus::Counter>& loads_;
  prometheus::Family<prometheus::Gauge>& model_info_;

  using ReporterMap = std::map<std::pair<std::string, int64_t>, std::shared_ptr<ModelMetrics>>;
  std::shared_ptr<ModelMetrics> MakeReporter(const std::string& model, const std::string& version);

  const std::shared_ptr<ModelMetrics> unresolved_;
  absl::Mutex mu_;
  struct Info {
    std::string precision;
    prometheus::Gauge* gauge = nullptr;
  };
  std::map<std::pair<std::string, int64_t>, Info> info_ ABSL_GUARDED_BY(mu_);
  // Replaced whole by SetModelVersions; the request path copies the pointer only.
  absl::Mutex reporters_mu_;
  std::shared_ptr<const ReporterMap> reporters_ ABSL_GUARDED_BY(reporters_mu_);
  mutable absl::Mutex collectables_mu_;
  std::vector<std::shared_ptr<prometheus::Collectable>> collectables_
      ABSL_GUARDED_BY(collectables_mu_);
  std::unique_ptr<prometheus::Exposer> exposer_;
};

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_METRICS_H_
