// The one place where absl::Status becomes grpc::Status, so every handler reports the
// same code for the same failure (the shape of TF Serving's grpc_status_util).
#ifndef NORMSERVE_SERVICE_STATUS_UTIL_H_
#define NORMSERVE_SERVICE_STATUS_UTIL_H_

#include <grpcpp/support/status.h>

#include <cstddef>

#include "absl/status/status.h"

namespace normserve {

// Longest message a client receives (TF Serving cuts at the same length): gRPC carries it
// in a trailer, and a default client refuses metadata over 8 KiB as RESOURCE_EXHAUSTED,
// which would hide the real code.
inline constexpr size_t kMaxStatusMessageBytes = 1024;

// Same code (absl and gRPC share the canonical code space) and the same message, cut to
// kMaxStatusMessageBytes (ending in "... (N bytes)" when cut).
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_STATUS_UTIL_H_
