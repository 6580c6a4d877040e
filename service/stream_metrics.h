// Prometheus view of the scheduler's streams (issue 12): per model, requests queued,
// streams running and the threads they hold; read at scrape time, so the request path
// pays nothing.
#ifndef NORMSERVE_SERVICE_STREAM_METRICS_H_
#define NORMSERVE_SERVICE_STREAM_METRICS_H_

#include <vector>

#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"
#include "service/inference_scheduler.h"
#include "service/servable_manager.h"

namespace normserve {

class StreamMetrics : public prometheus::Collectable {
 public:
  // Both outlive this collector.
  StreamMetrics(const ServableManager* manager, const InferenceScheduler* scheduler)
      : manager_(manager), scheduler_(scheduler) {}

  // normserve_queue_depth, normserve_streams_in_use, normserve_stream_threads_in_use
  // (gauges labelled {model}: every serving model, 0 when idle) and the unlabelled gauges
  // normserve_threads_in_use, normserve_threads_budget, normserve_auto_target_streams.
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const ServableManager* const manager_;
  const InferenceScheduler* const scheduler_;
};

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_STREAM_METRICS_H_
