// One scheduler snapshot per scrape; models listed from the manager so an idle model
// reports 0 instead of vanishing from the scrape.
#include "service/stream_metrics.h"

#include <string>
#include <utility>

namespace normserve {
namespace {

prometheus::MetricFamily Gauge(const std::string& name, const std::string& help) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = prometheus::MetricType::Gauge;
  return f;
}

void Add(prometheus::MetricFamily* f, const std::string& model, double value) {
  prometheus::ClientMetric m;
  if (!model.empty()) m.label = {{"model", model}};
  m.gauge.value = value;
  f->metric.push_back(std::move(m));
}

}  // namespace

std::vector<prometheus::MetricFamily> StreamMetrics::Collect() const {
  const InferenceScheduler::Stats stats = scheduler_->stats();
  prometheus::MetricFamily queued =
      Gauge("normserve_queue_depth", "Inference requests waiting to start, by model.");
  prometheus::MetricFamily streams =
      Gauge("normserve_streams_in_use", "Inference requests running at once (streams), by model.");
  prometheus::MetricFamily threads =
      Gauge("normserve_stream_threads_in_use", "Threads held by a model's running requests.");
  for (const ModelStatusInfo& model : manager_->List()) {
    InferenceScheduler::ModelLoad load;
    auto it = stats.models.find(model.name);
    if (it != stats.models.end()) load = it->second;
    Add(&queued, model.name, load.queued);
    Add(&streams, model.name, load.streams);
    Add(&threads, model.name, load.threads);
  }
  prometheus::MetricFamily in_use =
      Gauge("normserve_threads_in_use", "Threads held by all running inference requests.");
  Add(&in_use, "", stats.threads_in_use);
  prometheus::MetricFamily budget = Gauge(
      "normserve_threads_budget", "Threads all running requests may hold together (--cores).");
  Add(&budget, "", scheduler_->cores());
  prometheus::MetricFamily target =
      Gauge("normserve_auto_target_streams",
            "Streams performance_hint=auto models are cut into now, from the recent load.");
  Add(&target, "", stats.target_streams);
  return {std::move(queued), std::move(streams), std::move(threads),
          std::move(in_use), std::move(budget),  std::move(target)};
}

}  // namespace normserve
