// ToGrpcStatus keeps code and message for every canonical code.
#include "service/status_util.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace normserve
