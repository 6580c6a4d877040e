// normserve-cli's channels, deadlines, credentials and status -> exit code mapping.
#include "tools/cli_client.h"

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace normserve::cli {
namespace {

absl::StatusOr<std::string> ReadText(const std::string& flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("--", flag, "=", path, ": cannot be read"));
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

std::string ExitCodeHelp() {
  std::string help =
      "Exit codes: 0 ok; 1 health answered NOT_SERVING; 2 usage error; otherwise 64 + the gRPC\n"
      "status code of the failure, the server's or a local one (as grpcurl):";
  for (int code = 1; code <= 16; ++code) {
    absl::StrAppend(&help, code % 4 == 1 ? "\n  " : ", ", kExitStatusBase + code, " ",
                    absl::StatusCodeToString(static_cast<absl::StatusCode>(code)));
  }
  return help;
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> Connect(const CliOptions& options,
                                                       const std::string& address) {
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (!options.tls_ca.empty()) {
    grpc::SslCredentialsOptions ssl;
    absl::StatusOr<std::string> ca = ReadText("tls_ca", options.tls_ca);
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *ca;
    if (options.tls_client_cert.empty() != options.tls_client_key.empty()) {
      return absl::InvalidArgumentError(
          "--tls_client_cert and --tls_client_key go together: give both or neither");
    }
    if (!options.tls_client_cert.empty()) {
      absl::StatusOr<std::string> cert = ReadText("tls_client_cert", options.tls_client_cert);
      if (!cert.ok()) return cert.status();
      absl::StatusOr<std::string> key = ReadText("tls_client_key", options.tls_client_key);
      if (!key.ok()) return key.status();
      ssl.pem_cert_chain = *cert;
      ssl.pem_private_key = *key;
    }
    creds = grpc::SslCredentials(ssl);
  } else if (!options.tls_client_cert.empty()) {
    return absl::InvalidArgumentError("--tls_client_cert needs --tls_ca (TLS)");
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  return grpc::CreateCustomChannel(address, creds, args);
}

void SetDeadline(const CliOptions& options, grpc::ClientContext* ctx) {
  ctx->set_deadline(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(static_cast<int64_t>(options.timeout_s * 1000)));
}

absl::StatusOr<std::string> TrainingToken(const CliOptions& options) {
  if (!options.token_file.empty()) {
    absl::StatusOr<std::string> token = ReadText("token_file", options.token_file);
    if (!token.ok()) return token.status();
    std::string t(absl::StripAsciiWhitespace(*token));
    if (t.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--token_file=", options.token_file, ": the token is empty"));
    }
    return t;
  }
  const char* env = std::getenv("NORMSERVE_TRAINING_TOKEN");
  return env == nullptr ? std::string() : std::string(absl::StripAsciiWhitespace(env));
}

absl::Status FromGrpc(const grpc::Status& s) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

int Fail(const absl::Status& s) {
  if (s.ok()) return kExitOk;
  std::cerr << "error: " << absl::StatusCodeToString(s.code()) << ": " << s.message() << "\n";
  return kExitStatusBase + static_cast<int>(s.code());
}

int Fail(const grpc::Status& s) { return Fail(FromGrpc(s)); }

const char* ReliabilityName(::normserve::v1::BnReliability r) {
  switch (r) {
    case ::normserve::v1::BN_RELIABILITY_UNDEFINED:
      return "undefined";
    case ::normserve::v1::BN_RELIABILITY_UNRELIABLE:
      return "unreliable";
    case ::normserve::v1::BN_RELIABILITY_FINE:
      return "fine";
    default:
      return "?";
  }
}

}  // namespace normserve::cli
