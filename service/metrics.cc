// Metric families and the HTTP exposer.
#include "service/metrics.h"

#include <algorithm>
#include <exception>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "prometheus/text_serializer.h"

namespace normserve {
namespace {

// 0.5 ms .. ~16 s, doubling: batch-1 CNN latencies sit in the low milliseconds and the
// tail matters more than the bulk.
const prometheus::Histogram::BucketBoundaries& LatencyBuckets() {
  static const auto* const buckets = [] {
    auto* b = new prometheus::Histogram::BucketBoundaries;
    for (double s = 0.0005; s < 20; s *= 2) b->push_back(s);
    return b;
  }();
  return *buckets;
}

}  // namespace

Metrics::Metrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      requests_(prometheus::BuildCounter()
                    .Name("normserve_requests_total")
                    .Help("Inference requests answered, by model, version and gRPC status code.")
                    .Register(*registry_)),
      request_duration_(prometheus::BuildHistogram()
                            .Name("normserve_request_duration_seconds")
                            .Help("Inference request latency from arrival to answer.")
                            .Register(*registry_)),
      compute_duration_(prometheus::BuildHistogram()
                            .Name("normserve_compute_duration_seconds")
                            .Help("Time spent running the model for one request.")
                            .Register(*registry_)),
      queue_duration_(prometheus::BuildHistogram()
                          .Name("normserve_queue_duration_seconds")
                          .Help("Time a request waited for a worker.")
                          .Register(*registry_)),
      inflight_(prometheus::BuildGauge()
                    .Name("normserve_inflight_requests")
                    .Help("Inference requests accepted and not yet answered.")
                    .Register(*registry_)
                    .Add({})),
      loads_(prometheus::BuildCounter()
                 .Name("normserve_model_loads_total")
                 .Help("Model version loads, by result (success or failure).")
                 .Register(*registry_)),
      model_info_(prometheus::BuildGauge()
                      .Name("normserve_model_info")
                      .Help("1 for every model version serving.")
                      .Register(*registry_)) {
  // Both results exist from the start so rate() works before the first failure.
  loads_.Add({{"result", "success"}});
  loads_.Add({{"result", "failure"}});
}

Metrics::~Metrics() = default;

absl::Status Metrics::StartExposer(const std::string& address) {
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(address);
  } catch (const std::exception& e) {
    // civetweb reports a busy port by throwing; it must not cross into the server.
    return absl::UnavailableError(
        absl::StrCat("metrics endpoint ", address, " cannot listen: ", e.what()));
  }
  exposer_->RegisterCollectable(registry_);
  return absl::OkStatus();
}

int Metrics::port() const {
  if (exposer_ == nullptr) return 0;
  const std::vector<int> ports = exposer_->GetListeningPorts();
  return ports.empty() ? 0 : ports[0];
}

void Metrics::RequestStarted() { inflight_.Increment(); }

void Metrics::RequestFinished(const std::string& model, const std::string& version,
                              absl::StatusCode code, absl::Duration duration) {
  inflight_.Decrement();
  requests_.Add({{"model", model}, {"version", version}, {"code", absl::StatusCodeToString(code)}})
      .Increment();
  request_duration_.Add({{"model", model}}, LatencyBuckets())
      .Observe(absl::ToDoubleSeconds(duration));
}

void Metrics::ObserveQueue(const std::string& model, absl::Duration d) {
  queue_duration_.Add({{"model", model}}, LatencyBuckets()).Observe(absl::ToDoubleSeconds(d));
}

void Metrics::ObserveCompute(const std::string& model, absl::Duration d) {
  compute_duration_.Add({{"model", model}}, LatencyBuckets()).Observe(absl::ToDoubleSeconds(d));
}

void Metrics::ModelLoad(bool ok) {
  loads_.Add({{"result", ok ? "success" : "failure"}}).Increment();
}

void Metrics::SetModelVersions(const std::string& model, const std::vector<int64_t>& versions) {
  absl::MutexLock lock(&mu_);
  for (auto it = info_.begin(); it != info_.end();) {
    if (it->first.first == model &&
        std::find(versions.begin(), versions.end(), it->first.second) == versions.end()) {
      model_info_.Remove(it->second);
      it = info_.erase(it);
    } else {
      ++it;
    }
  }
  for (int64_t v : versions) {
    auto key = std::make_pair(model, v);
    if (info_.count(key) > 0) continue;
    prometheus::Gauge& g = model_info_.Add({{"model", model}, {"version", absl::StrCat(v)}});
    g.Set(1);
    info_[key] = &g;
  }
}

std::string Metrics::Serialize() const {
  prometheus::TextSerializer serializer;
  std::ostringstream out;
  serializer.Serialize(out, registry_->Collect());
  return out.str();
}

}  // namespace normserve
