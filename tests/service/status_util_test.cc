// ToGrpcStatus keeps code and message for every canonical code and bounds the message;
// Echo bounds a quoted value.
#include "service/status_util.h"

#include <gtest/gtest.h>

#include <string>

#include "service/client_echo.h"

namespace normserve {
namespace {

TEST(StatusUtilTest, OkIsOk) { EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok()); }

TEST(StatusUtilTest, CodesThatClientsActOnMapOneToOne) {
  struct Case {
    absl::Status in;
    grpc::StatusCode want;
  };
  const Case cases[] = {
      {absl::InvalidArgumentError("bad"), grpc::StatusCode::INVALID_ARGUMENT},
      {absl::NotFoundError("bad"), grpc::StatusCode::NOT_FOUND},
      {absl::FailedPreconditionError("bad"), grpc::StatusCode::FAILED_PRECONDITION},
      {absl::ResourceExhaustedError("bad"), grpc::StatusCode::RESOURCE_EXHAUSTED},
      {absl::UnauthenticatedError("bad"), grpc::StatusCode::UNAUTHENTICATED},
      {absl::UnavailableError("bad"), grpc::StatusCode::UNAVAILABLE},
      {absl::DeadlineExceededError("bad"), grpc::StatusCode::DEADLINE_EXCEEDED},
      {absl::CancelledError("bad"), grpc::StatusCode::CANCELLED},
      {absl::InternalError("bad"), grpc::StatusCode::INTERNAL},
      {absl::UnimplementedError("bad"), grpc::StatusCode::UNIMPLEMENTED},
      {absl::PermissionDeniedError("bad"), grpc::StatusCode::PERMISSION_DENIED},
      {absl::AlreadyExistsError("bad"), grpc::StatusCode::ALREADY_EXISTS},
      {absl::OutOfRangeError("bad"), grpc::StatusCode::OUT_OF_RANGE},
      {absl::AbortedError("bad"), grpc::StatusCode::ABORTED},
      {absl::DataLossError("bad"), grpc::StatusCode::DATA_LOSS},
      {absl::UnknownError("bad"), grpc::StatusCode::UNKNOWN},
  };
  for (const Case& c : cases) {
    const grpc::Status s = ToGrpcStatus(c.in);
    EXPECT_EQ(s.error_code(), c.want) << c.in;
    EXPECT_EQ(s.error_message(), "bad");
  }
}

TEST(StatusUtilTest, OutOfRangeCodeBecomesUnknown) {
  const grpc::Status s = ToGrpcStatus(absl::Status(static_cast<absl::StatusCode>(99), "odd"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNKNOWN);
  EXPECT_EQ(s.error_message(), "odd");
}

TEST(StatusUtilTest, LongMessagesAreCutToTheLimitWithTheirLength) {
  const std::string long_message = "model \"" + std::string(10000, 'x') + "\" is not loaded";
  const grpc::Status s = ToGrpcStatus(absl::NotFoundError(long_message));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(s.error_message().size(), kMaxStatusMessageBytes);
  EXPECT_EQ(s.error_message().substr(0, 7), "model \"");
  EXPECT_NE(s.error_message().find("... (10022 bytes)"), std::string::npos) << s.error_message();
  const std::string at_limit(kMaxStatusMessageBytes, 'y');
  EXPECT_EQ(ToGrpcStatus(absl::InternalError(at_limit)).error_message(), at_limit);
}

TEST(StatusUtilTest, EchoKeepsShortValuesAndCutsLongOnes) {
  EXPECT_EQ(Echo("resnet18"), "resnet18");
  EXPECT_EQ(Echo("a\"b\n"), "a\\\"b\\n");
  const std::string echoed = Echo(std::string(10240, 'n'));
  EXPECT_EQ(echoed, std::string(kEchoPrefixBytes, 'n') + "... (10240 bytes)");
}

}  // namespace
}  // namespace normserve
