// Bearer token / client certificate check for the training listener.
#include "service/training/bearer_auth.h"

#include <grpcpp/security/auth_context.h>

namespace normserve {

bool ConstantTimeEquals(absl::string_view presented, absl::string_view expected) {
  // Every byte of `expected` is visited whatever `presented` holds; the length
  // difference is folded into the result instead of returning early.
  unsigned char diff = presented.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i) {
    const unsigned char p =
        presented.empty() ? 0 : static_cast<unsigned char>(presented[i % presented.size()]);
    diff |= static_cast<unsigned char>(p ^ static_cast<unsigned char>(expected[i]));
  }
  return diff == 0 && !expected.empty();
}

absl::Status BearerAuth::Check(const grpc::ServerContextBase& context) const {
  if (client_certs_) {
    std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
    // The listener requires and verifies client certificates; a peer identity means the
    // handshake accepted one.
    if (auth != nullptr && auth->IsPeerAuthenticated()) return absl::OkStatus();
  }
  if (!token_.empty()) {
    constexpr absl::string_view kPrefix = "Bearer ";
    const auto& metadata = context.client_metadata();
    auto it = metadata.find("authorization");
    if (it != metadata.end()) {
      const absl::string_view value(it->second.data(), it->second.size());
      if (value.size() > kPrefix.size() && value.substr(0, kPrefix.size()) == kPrefix &&
          ConstantTimeEquals(value.substr(kPrefix.size()), token_)) {
        return absl::OkStatus();
      }
    }
  }
  return absl::UnauthenticatedError(
      "the training endpoint needs \"authorization: Bearer <token>\" metadata or a client "
      "certificate");
}

}  // namespace normserve
