// Minimal line logging to stderr: Debian's Abseil 20220623 ships no absl/log, and a
// server needs timestamps on its load and drain messages.
#ifndef NORMSERVE_SERVICE_LOG_H_
#define NORMSERVE_SERVICE_LOG_H_

#include "absl/strings/string_view.h"

namespace normserve {

enum class LogLevel { kInfo, kWarning, kError };

// One line, written whole (a single write) so concurrent lines do not interleave.
void Log(LogLevel level, absl::string_view message);

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_LOG_H_
