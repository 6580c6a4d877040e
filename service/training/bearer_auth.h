// Authentication of training calls: "authorization: Bearer <token>" metadata compared in
// constant time, or a client certificate verified by the TLS handshake (mTLS). Every
// failure is the same UNAUTHENTICATED message, so a caller learns nothing about which
// part was wrong.
#ifndef NORMSERVE_SERVICE_TRAINING_BEARER_AUTH_H_
#define NORMSERVE_SERVICE_TRAINING_BEARER_AUTH_H_

#include <grpcpp/server_context.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace normserve {

// Equal strings, in time that depends only on `expected`'s length.
bool ConstantTimeEquals(absl::string_view presented, absl::string_view expected);

class BearerAuth {
 public:
  // `token` empty: no token is accepted. `client_certs`: a verified client certificate
  // (the listener requires one) authenticates the call.
  BearerAuth(std::string token, bool client_certs)
      : token_(std::move(token)), client_certs_(client_certs) {}

  absl::Status Check(const grpc::ServerContextBase& context) const;

 private:
  const std::string token_;
  const bool client_certs_;
};

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_TRAINING_BEARER_AUTH_H_
