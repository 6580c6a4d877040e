// The one place where absl::Status becomes grpc::Status, so every handler reports the
// same code for the same failure (the shape of TF Serving's grpc_status_util).
#ifndef NORMSERVE_SERVICE_STATUS_UTIL_H_
#define NORMSERVE_SERVICE_STATUS_UTIL_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace normserve {

// Same code (absl and gRPC share the canonical code space) and the same message.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_STATUS_UTIL_H_
