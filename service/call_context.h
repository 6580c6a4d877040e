// What a handler takes from a gRPC call for the domain layer: the client's deadline and
// a cancellation probe (TF Serving's DeadlineToTimeoutMillis, in absl::Time).
#ifndef NORMSERVE_SERVICE_CALL_CONTEXT_H_
#define NORMSERVE_SERVICE_CALL_CONTEXT_H_

#include <grpcpp/server_context.h>

#include <functional>

#include "absl/time/time.h"

namespace normserve {

// InfiniteFuture when the client set no deadline.
absl::Time CallDeadline(const grpc::CallbackServerContext& context);

// True once the client cancelled or its deadline passed. Safe from any thread until
// the call is finished (the reactor's Finish), which is when the domain layer drops it.
std::function<bool()> CancellationProbe(grpc::CallbackServerContext* context);

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_CALL_CONTEXT_H_
