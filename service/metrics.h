// Prometheus metrics of the server, exposed over HTTP by prometheus-cpp's Exposer.
// Names follow the Prometheus conventions (base units, _total counters, _seconds
// histograms) so `promtool check metrics` has nothing to say.
#ifndef NORMSERVE_SERVICE_METRICS_H_
#define NORMSERVE_SERVICE_METRICS_H_

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

class Metrics {
 public:
  Metrics();
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // Serves /metrics on `address` ("0.0.0.0:8002"; port 0 picks a free one). Errors name
  // the address.
  absl::Status StartExposer(const std::string& address);
  // The port the exposer listens on, 0 when not started.
  int port() const;

  void RequestStarted();
  // `model`/`version` empty when the request never reached a servable (unknown model):
  // a client must not be able to mint label values.
  void RequestFinished(const std::string& model, const std::string& version, absl::StatusCode code,
                       absl::Duration duration);
  void ObserveQueue(const std::string& model, absl::Duration d);
  void ObserveCompute(const std::string& model, absl::Duration d);
  void ModelLoad(bool ok);
  // Publishes normserve_model_info{model,version} = 1 for exactly `versions`.
  void SetModelVersions(const std::string& model, const std::vector<int64_t>& versions);

  // The text exposition format of every metric (what /metrics serves).
  std::string Serialize() const;

  // The registry /metrics serves, for components that add their own families (training).
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& request_duration_;
  prometheus::Family<prometheus::Histogram>& compute_duration_;
  prometheus::Family<prometheus::Histogram>& queue_duration_;
  prometheus::Gauge& inflight_;
  prometheus::Family<prometheus::Counter>& loads_;
  prometheus::Family<prometheus::Gauge>& model_info_;

  absl::Mutex mu_;
  std::map<std::pair<std::string, int64_t>, prometheus::Gauge*> info_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<prometheus::Exposer> exposer_;
};

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_METRICS_H_
