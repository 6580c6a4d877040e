// Prometheus view of every serving model version's plan cache (issue 9: plans are bounded
// and counted): read from the engine at scrape time, so the request path pays nothing.
#ifndef NORMSERVE_SERVICE_PLAN_CACHE_METRICS_H_
#define NORMSERVE_SERVICE_PLAN_CACHE_METRICS_H_

#include <vector>

#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"
#include "service/servable_manager.h"

namespace normserve {

class PlanCacheMetrics : public prometheus::Collectable {
 public:
  // `manager` outlives this collector.
  explicit PlanCacheMetrics(const ServableManager* manager) : manager_(manager) {}

  // normserve_plan_compiles_total, normserve_plan_compile_failures_total,
  // normserve_plan_compile_seconds_total, normserve_plan_cache_hits_total,
  // normserve_plan_cache_misses_total, normserve_plan_evictions_total (counters) and
  // normserve_plan_cache_bytes, normserve_plan_cache_entries (gauges), each labelled
  // {model, version}. Counters restart with a version's reload (a new plan cache).
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const ServableManager* const manager_;
};

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_PLAN_CACHE_METRICS_H_
