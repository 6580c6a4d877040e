// normserve-cli's connection to the server: the options every subcommand shares (filled
// from flags in normserve_cli.cc), channels, deadlines, and the one place a status becomes
// a message and an exit code.
#ifndef NORMSERVE_TOOLS_CLI_CLIENT_H_
#define NORMSERVE_TOOLS_CLI_CLIENT_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "normserve/v1/inference.pb.h"

namespace normserve::cli {

struct CliOptions {
  std::string server = "localhost:8001";
  std::string training_server = "localhost:8003";
  // TLS: a CA bundle to verify the server; a client certificate and key for a training
  // endpoint that requires one (the server's --training_client_ca).
  std::string tls_ca;
  std::string tls_client_cert;
  std::string tls_client_key;
  // The training bearer token: the file's contents, else NORMSERVE_TRAINING_TOKEN.
  std::string token_file;
  double timeout_s = 30;
  int64_t version = 0;
  // A preprocessing declaration (JSON) overriding the model's config.json one.
  std::string preprocess;
};

// Exit codes. 0: success; 1: a health check answered NOT_SERVING; 2: usage error; any
// failed status (the server's, or a local one such as an unreadable file): 64 + its gRPC
// code (grpcurl's convention), listed by ExitCodeHelp().
constexpr int kExitOk = 0;
constexpr int kExitNotServing = 1;
constexpr int kExitUsage = 2;
constexpr int kExitStatusBase = 64;

// The --help paragraph that lists every exit code.
std::string ExitCodeHelp();

// Channel to `address` with the TLS options (plaintext without --tls_ca).
absl::StatusOr<std::shared_ptr<grpc::Channel>> Connect(const CliOptions& options,
                                                       const std::string& address);
void SetDeadline(const CliOptions& options, grpc::ClientContext* ctx);
// The training bearer token from --token_file, else NORMSERVE_TRAINING_TOKEN; "" when
// neither is set (a client certificate may still authenticate).
absl::StatusOr<std::string> TrainingToken(const CliOptions& options);

absl::Status FromGrpc(const grpc::Status& s);
// Prints "error: CODE: message" to stderr and returns the exit code of `s` (0 when ok).
// "undefined", "unreliable", "fine": a BN layer's reliability as the tables print it.
const char* ReliabilityName(::normserve::v1::BnReliability r);

int Fail(const absl::Status& s);
int Fail(const grpc::Status& s);

}  // namespace normserve::cli

#endif  // NORMSERVE_TOOLS_CLI_CLIENT_H_
