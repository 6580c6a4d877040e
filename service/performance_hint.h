// A model's performance hint (OpenVINO's LATENCY / THROUGHPUT idea): which stream shapes
// (concurrent runs x threads each) the scheduler may give its requests.
#ifndef NORMSERVE_SERVICE_PERFORMANCE_HINT_H_
#define NORMSERVE_SERVICE_PERFORMANCE_HINT_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace normserve {

enum class PerformanceHint {
  // Streams follow the load: a lone request gets every core, queued ones share them.
  kAuto,
  // Every request gets every core: one stream (today's 1 worker x all cores).
  kLatency,
  // One thread a request, as many at once as there are cores.
  kThroughput,
};

// "latency", "throughput" or "auto"; `what` names the setting in the error.
absl::StatusOr<PerformanceHint> ParsePerformanceHint(absl::string_view text,
                                                     absl::string_view what);
const char* PerformanceHintName(PerformanceHint hint);

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_PERFORMANCE_HINT_H_
