// Metric families and the HTTP exposer.
#include "service/metrics.h"

#include <algorithm>
#include <exception>
#include <sstream>
#include <utility>

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

ModelMetrics::ModelMetrics(prometheus::Family<prometheus::Counter>* requests,
                           prometheus::Family<prometheus::Histogram>* request_duration,
                           prometheus::Family<prometheus::Histogram>* queue_duration,
                           prometheus::Family<prometheus::Histogram>* compute_duration,
                           std::string model, std::string version)
    : requests_(requests),
      request_duration_(request_duration),
      queue_duration_(queue_duration),
      compute_duration_(compute_duration),
      model_(std::move(model)),
      version_(std::move(version)) {}

prometheus::Histogram& ModelMetrics::Histogram(prometheus::Family<prometheus::Histogram>* family,
                                               std::atomic<prometheus::Histogram*>* slot) {
  prometheus::Histogram* h = slot->load(std::memory_order_acquire);
  if (h == nullptr) {
    h = &family->Add({{"model", model_}}, LatencyBuckets());
    slot->store(h, std::memory_order_release);
  }
  return *h;
}

void ModelMetrics::RequestFinished(absl::StatusCode code, absl::Duration duration) {
  int index = static_cast<int>(code);
  if (index < 0 || index >= static_cast<int>(by_code_.size())) {
    index = static_cast<int>(absl::StatusCode::kUnknown);
  }
  prometheus::Counter* counter = by_code_[index].load(std::memory_order_acquire);
  if (counter == nullptr) {
    counter =
        &requests_->Add({{"model", model_},
                         {"version", version_},
                         {"code", absl::StatusCodeToString(static_cast<absl::StatusCode>(index))}});
    by_code_[index].store(counter, std::memory_order_release);
  }
  counter->Increment();
  Histogram(request_duration_, &request_duration_series_).Observe(absl::ToDoubleSeconds(duration));
}

void ModelMetrics::ObserveQueue(absl::Duration d) {
  Histogram(queue_duration_, &queue_duration_series_).Observe(absl::ToDoubleSeconds(d));
}

void ModelMetrics::ObserveCompute(absl::Duration d) {
  Histogram(compute_duration_, &compute_duration_series_).Observe(absl::ToDoubleSeconds(d));
}

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
      model_info_(
          prometheus::BuildGauge()
              .Name("normserve_model_info")
              .Help("1 for every model version serving; precision: what it runs in (fp32, bf16).")
              .Register(*registry_)),
      unresolved_(MakeReporter("", "")),
      reporters_(std::make_shared<const ReporterMap>()) {
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

void Metrics::RequestEnded() { inflight_.Decrement(); }

std::shared_ptr<ModelMetrics> Metrics::MakeReporter(const std::string& model,
                                                    const std::string& version) {
  return std::make_shared<ModelMetrics>(&requests_, &request_duration_, &queue_duration_,
                                        &compute_duration_, model, version);
}

std::shared_ptr<ModelMetrics> Metrics::ForModel(const std::string& model, int64_t version) {
  std::shared_ptr<const ReporterMap> reporters;
  {
    absl::MutexLock lock(&reporters_mu_);
    reporters = reporters_;
  }
  auto it = reporters->find(std::make_pair(model, version));
  if (it != reporters->end()) return it->second;
  // A version unpublished between the lookup of its servable and here: its series
  // still exist in the families, so fresh handles find them.
  return MakeReporter(model, absl::StrCat(version));
}

void Metrics::ModelLoad(bool ok) {
  loads_.Add({{"result", ok ? "success" : "failure"}}).Increment();
}

void Metrics::SetModelVersions(const std::string& model, const std::vector<int64_t>& versions,
                               const std::vector<std::string>& precisions) {
  absl::MutexLock lock(&mu_);
  auto precision_of = [&](size_t i) {
    return i < precisions.size() ? precisions[i] : std::string("fp32");
  };
  for (auto it = info_.begin(); it != info_.end();) {
    const auto pos = std::find(versions.begin(), versions.end(), it->first.second);
    // A version reloaded in another precision gets a new series; the old one goes.
    if (it->first.first == model &&
        (pos == versions.end() ||
         precision_of(static_cast<size_t>(pos - versions.begin())) != it->second.precision)) {
      model_info_.Remove(it->second.gauge);
      it = info_.erase(it);
    } else {
      ++it;
    }
  }
  for (size_t i = 0; i < versions.size(); ++i) {
    auto key = std::make_pair(model, versions[i]);
    if (info_.count(key) > 0) continue;
    prometheus::Gauge& g = model_info_.Add(
        {{"model", model}, {"version", absl::StrCat(versions[i])}, {"precision", precision_of(i)}});
    g.Set(1);
    info_[key] = Info{precision_of(i), &g};
  }
  // Handles of versions that stopped serving are dropped (requests still running keep
  // theirs); the map holds only what serves.
  absl::MutexLock reporters_lock(&reporters_mu_);
  auto next = std::make_shared<ReporterMap>();
  for (const auto& [key, reporter] : *reporters_) {
    if (key.first != model) next->emplace(key, reporter);
  }
  for (int64_t v : versions) {
    auto key = std::make_pair(model, v);
    auto old = reporters_->find(key);
    next->emplace(key,
                  old != reporters_->end() ? old->second : MakeReporter(model, absl::StrCat(v)));
  }
  reporters_ = std::move(next);
}

void Metrics::AddCollectable(std::shared_ptr<prometheus::Collectable> collectable) {
  if (exposer_ != nullptr) exposer_->RegisterCollectable(collectable);
  absl::MutexLock lock(&collectables_mu_);
  collectables_.push_back(std::move(collectable));
}

std::string Metrics::Serialize() const {
  prometheus::TextSerializer serializer;
  std::ostringstream out;
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  absl::MutexLock lock(&collectables_mu_);
  for (const auto& c : collectables_) {
    for (auto& f : c->Collect()) families.push_back(std::move(f));
  }
  serializer.Serialize(out, families);
  return out.str();
}

}  // namespace normserve
