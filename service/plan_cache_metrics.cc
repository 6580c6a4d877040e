#include "service/plan_cache_metrics.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/plan_cache.h"

namespace normserve {
namespace {

prometheus::MetricFamily Family(const std::string& name, const std::string& help,
                                prometheus::MetricType type) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = type;
  return f;
}

void Add(prometheus::MetricFamily* f, const std::string& model, int64_t version, double value) {
  prometheus::ClientMetric m;
  m.label = {{"model", model}, {"version", absl::StrCat(version)}};
  if (f->type == prometheus::MetricType::Counter)
    m.counter.value = value;
  else
    m.gauge.value = value;
  f->metric.push_back(std::move(m));
}

}  // namespace

std::vector<prometheus::MetricFamily> PlanCacheMetrics::Collect() const {
  using prometheus::MetricType;
  std::vector<prometheus::MetricFamily> out = {
      Family("normserve_plan_compiles_total",
             "Plans compiled on demand for input shapes not compiled at load.",
             MetricType::Counter),
      Family("normserve_plan_compile_failures_total", "On-demand plan compiles that failed.",
             MetricType::Counter),
      Family("normserve_plan_compile_seconds_total", "Seconds spent compiling plans on demand.",
             MetricType::Counter),
      Family("normserve_plan_cache_hits_total", "Runs whose input shapes had a cached plan.",
             MetricType::Counter),
      Family("normserve_plan_cache_misses_total", "Runs whose input shapes needed a compile.",
             MetricType::Counter),
      Family("normserve_plan_evictions_total",
             "Plans evicted from the plan cache (least recently used).", MetricType::Counter),
      Family(
          "normserve_plan_cache_bytes",
          "Bytes of plans held (weights in their layout, arena, scratchpad), precompiled included.",
          MetricType::Gauge),
      Family("normserve_plan_cache_entries", "Plans held, precompiled included.",
             MetricType::Gauge),
  };
  for (const ModelStatusInfo& model : manager_->List()) {
    for (int64_t version : model.versions) {
      absl::StatusOr<std::shared_ptr<const Servable>> s = manager_->Get(model.name, version);
      if (!s.ok()) continue;  // unloaded since List()
      const PlanCacheStats st = (*s)->compiled->plan_cache_stats();
      const double values[] = {static_cast<double>(st.compiles),
                               static_cast<double>(st.compile_failures),
                               st.compile_seconds,
                               static_cast<double>(st.hits),
                               static_cast<double>(st.misses),
                               static_cast<double>(st.evictions),
                               static_cast<double>(st.bytes),
                               static_cast<double>(st.entries)};
      for (size_t i = 0; i < out.size(); ++i) Add(&out[i], model.name, version, values[i]);
    }
  }
  return out;
}

}  // namespace normserve
