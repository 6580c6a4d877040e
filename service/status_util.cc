// absl::Status -> grpc::Status.
#include "service/status_util.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace normserve {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // The canonical codes are numerically identical in absl and gRPC (both follow
  // google.rpc.Code); anything outside that range is a bug upstream, reported as UNKNOWN
  // rather than forwarded as a code clients cannot interpret.
  const int code = static_cast<int>(status.code());
  const grpc::StatusCode grpc_code =
      (code >= 0 && code <= static_cast<int>(grpc::StatusCode::UNAUTHENTICATED))
          ? static_cast<grpc::StatusCode>(code)
          : grpc::StatusCode::UNKNOWN;
  const absl::string_view message = status.message();
  if (message.size() <= kMaxStatusMessageBytes)
    return grpc::Status(grpc_code, std::string(message));
  const std::string tail = absl::StrCat("... (", message.size(), " bytes)");
  return grpc::Status(grpc_code,
                      absl::StrCat(message.substr(0, kMaxStatusMessageBytes - tail.size()), tail));
}

}  // namespace normserve
