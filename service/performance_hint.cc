// Parsing and naming of performance hints, shared by config.json and the server flag.
#include "service/performance_hint.h"

#include "absl/strings/str_cat.h"
#include "service/client_echo.h"

namespace normserve {

absl::StatusOr<PerformanceHint> ParsePerformanceHint(absl::string_view text,
                                                     absl::string_view what) {
  if (text == "auto") return PerformanceHint::kAuto;
  if (text == "latency") return PerformanceHint::kLatency;
  if (text == "throughput") return PerformanceHint::kThroughput;
  return absl::InvalidArgumentError(
      absl::StrCat(what, " \"", Echo(text), "\" is not one of latency, throughput, auto"));
}

const char* PerformanceHintName(PerformanceHint hint) {
  switch (hint) {
    case PerformanceHint::kAuto:
      return "auto";
    case PerformanceHint::kLatency:
      return "latency";
    case PerformanceHint::kThroughput:
      return "throughput";
  }
  return "auto";
}

}  // namespace normserve
