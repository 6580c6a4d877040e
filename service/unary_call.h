// A unary callback call whose request bytes the service decodes itself. gRPC 1.51's
// callback path (CallbackUnaryHandler::RunHandler) drops the status of a failed request
// deserialization and answers UNIMPLEMENTED with empty details, which tells a client
// nothing and is the code for "no such method". Registering the methods raw (ByteBuffer
// in, ByteBuffer out) and decoding here answers INVALID_ARGUMENT with a reason instead.
#ifndef NORMSERVE_SERVICE_UNARY_CALL_H_
#define NORMSERVE_SERVICE_UNARY_CALL_H_

#include <grpcpp/impl/codegen/proto_utils.h>  // SerializationTraits for protobuf messages
#include <grpcpp/server_context.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/server_callback.h>

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace normserve {

template <typename Request, typename Response>
class UnaryCall final : public grpc::ServerUnaryReactor {
 public:
  explicit UnaryCall(grpc::ByteBuffer* out) : out_(out) {}

  const Request& request() const { return request_; }
  Request* mutable_request() { return &request_; }
  Response* response() { return &response_; }

  // Encodes the response (when `status` is OK) and finishes the call; exactly once.
  // Hides ServerUnaryReactor::Finish, which would send the raw buffer unfilled.
  void Finish(grpc::Status status) {
    if (status.ok()) {
      bool own = false;
      status = grpc::SerializationTraits<Response>::Serialize(response_, out_, &own);
    }
    grpc::ServerUnaryReactor::Finish(std::move(status));
  }

  void OnDone() override { delete this; }

 private:
  Request request_;
  Response response_;
  grpc::ByteBuffer* const out_;
};

// Decodes `in` into a new call and runs `handler(call)`, or finishes the call with
// INVALID_ARGUMENT naming the message type and the size when the bytes do not parse.
// The call deletes itself once gRPC is done with it.
template <typename Request, typename Response, typename Handler>
grpc::ServerUnaryReactor* DecodeAndRun(const grpc::ByteBuffer* in, grpc::ByteBuffer* out,
                                       Handler&& handler) {
  auto* call = new UnaryCall<Request, Response>(out);
  // Deserialize consumes its buffer; the copy shares the slices, it does not copy bytes.
  grpc::ByteBuffer bytes(*in);
  const size_t size = bytes.Length();
  const grpc::Status decoded =
      grpc::SerializationTraits<Request>::Deserialize(&bytes, call->mutable_request());
  if (!decoded.ok()) {
    call->Finish(grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrCat("the request (", size, " bytes) does not decode as ",
                     Request::descriptor()->full_name(), " (",
                     decoded.error_message().empty() ? std::string("malformed protobuf wire format")
                                                     : decoded.error_message(),
                     ")")));
    return call;
  }
  handler(call);
  return call;
}

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_UNARY_CALL_H_
