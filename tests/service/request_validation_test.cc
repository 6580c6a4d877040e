// Every way a client can get an input wrong, and the exact message it gets back.
#include "service/request_validation.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "service/normserve_conversion.h"

namespace normserve {
namespace {

using ::testing::HasSubstr;

std::vector<ValueSpec> ImageModel() {
  ValueSpec in;
  in.name = "input";
  in.shape = {-1, 3, 224, 224};
  return {in};
}

// Raw little-endian bytes of `values`.
std::string Raw(const std::vector<float>& values) {
  std::string bytes(values.size() * sizeof(float), '\0');
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

struct Request {
  std::vector<float> values;
  std::string raw;
  RequestTensor tensor;
};

// A well-formed FP32 request for ImageModel() with raw contents.
Request ValidRaw(int64_t batch = 1) {
  Request r;
  r.values.assign(batch * 3 * 224 * 224, 0.5f);
  r.raw = Raw(r.values);
  r.tensor.name = "input";
  r.tensor.datatype = "FP32";
  r.tensor.shape = {batch, 3, 224, 224};
  r.tensor.has_raw = true;
  r.tensor.raw = r.raw;
  return r;
}

absl::Status Validate(const RequestTensor& t, ValidationOptions options = {}) {
  return ValidateInputs(ImageModel(), {t}, options).status();
}

TEST(RequestValidationTest, AcceptsRawBatchOne) {
  Request r = ValidRaw();
  r.values[7] = 3.25f;
  r.raw = Raw(r.values);
  r.tensor.raw = r.raw;
  absl::StatusOr<std::vector<Tensor>> out = ValidateInputs(ImageModel(), {r.tensor}, {});
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), 1u);
  EXPECT_EQ((*out)[0].shape, (std::vector<int64_t>{1, 3, 224, 224}));
  EXPECT_EQ((*out)[0].data.size(), 150528u);
  EXPECT_EQ((*out)[0].data[7], 3.25f);
}

TEST(RequestValidationTest, AcceptsTypedValuesAndBatch) {
  Request r = ValidRaw(2);
  r.tensor.has_raw = false;
  r.tensor.raw = {};
  r.tensor.fp32_values = r.values;
  absl::StatusOr<std::vector<Tensor>> out = ValidateInputs(ImageModel(), {r.tensor}, {});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ((*out)[0].shape[0], 2);
}

TEST(RequestValidationTest, EmptyNameIsTheSingleInput) {
  Request r = ValidRaw();
  r.tensor.name = "";
  EXPECT_TRUE(Validate(r.tensor).ok());
}

TEST(RequestValidationTest, ByteSizeMismatchNamesTensorShapeAndCounts) {
  Request r = ValidRaw();
  r.tensor.raw = absl::string_view(r.raw).substr(0, r.raw.size() - 4);
  const absl::Status s = Validate(r.tensor);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "input \"input\": expected 602112 bytes for shape [1,3,224,224] FP32, got 602108");
}

TEST(RequestValidationTest, TypedCountMismatch) {
  Request r = ValidRaw();
  r.tensor.has_raw = false;
  r.tensor.fp32_values = absl::MakeConstSpan(r.values).subspan(1);
  const absl::Status s = Validate(r.tensor);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "input \"input\": expected 150528 FP32 values for shape [1,3,224,224], got 150527");
}

TEST(RequestValidationTest, WrongDatatype) {
  Request r = ValidRaw();
  r.tensor.datatype = "INT64";
  const absl::Status s = Validate(r.tensor);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("datatype INT64 is not accepted; the model expects FP32"));
  r.tensor.datatype = "";
  EXPECT_THAT(Validate(r.tensor).message(), HasSubstr("(unset)"));
}

TEST(RequestValidationTest, WrongRank) {
  Request r = ValidRaw();
  r.tensor.shape = {3, 224, 224};
  const absl::Status s = Validate(r.tensor);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "input \"input\": expected rank 4 (shape [-1,3,224,224]), got rank 3 [3,224,224]");
}

TEST(RequestValidationTest, WrongDim) {
  Request r = ValidRaw();
  r.tensor.shape = {1, 3, 225, 224};
  const absl::Status s = Validate(r.tensor);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("dim 2 of [1,3,225,224] is 225, the model expects 224"));
}

TEST(RequestValidationTest, ShapeProductOverflowIsCaughtBeforeAnyAllocation) {
  Request r = ValidRaw();
  r.tensor.shape = {int64_t{1} << 50, 3, 224, 224};  // 1.7e20 elements
  const absl::Status s = Validate(r.tensor);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("input \"input\""));
  EXPECT_THAT(s.message(), HasSubstr("int64"));
}

TEST(RequestValidationTest, NegativeDim) {
  Request r = ValidRaw();
  r.tensor.shape = {1, -3, 224, 224};
  const absl::Status s = Validate(r.tensor);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("negative"));
}

TEST(RequestValidationTest, BatchLimits) {
  Request r = ValidRaw();
  r.tensor.shape = {0, 3, 224, 224};
  r.tensor.raw = {};
  EXPECT_THAT(Validate(r.tensor).message(), HasSubstr("batch size 0"));
  Request big = ValidRaw(3);
  ValidationOptions options;
  options.max_batch = 2;
  EXPECT_THAT(Validate(big.tensor, options).message(),
              HasSubstr("batch size 3 (dim 0 of [3,3,224,224]) is outside [1, 2]"));
}

TEST(RequestValidationTest, NanAndInfRefusedByDefaultWithPosition) {
  Request r = ValidRaw();
  r.values[224 * 224 + 5] = std::numeric_limits<float>::quiet_NaN();
  r.raw = Raw(r.values);
  r.tensor.raw = r.raw;
  absl::Status s = Validate(r.tensor);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("input \"input\": element [0,1,0,5] is NaN"));

  r.values[224 * 224 + 5] = -std::numeric_limits<float>::infinity();
  r.raw = Raw(r.values);
  r.tensor.raw = r.raw;
  EXPECT_THAT(Validate(r.tensor).message(), HasSubstr("is -Inf"));

  ValidationOptions allow;
  allow.allow_non_finite = true;
  EXPECT_TRUE(Validate(r.tensor, allow).ok());
}

TEST(RequestValidationTest, UnknownMissingAndDuplicateNames) {
  Request r = ValidRaw();
  r.tensor.name = "pixels";
  EXPECT_EQ(Validate(r.tensor).message(),
            "unknown input \"pixels\"; the model's inputs are \"input\"");

  EXPECT_THAT(ValidateInputs(ImageModel(), {}, {}).status().message(),
              HasSubstr("expected 1 input tensor(s), got 0"));

  std::vector<ValueSpec> two = ImageModel();
  two.push_back(two[0]);
  two[1].name = "mask";
  Request a = ValidRaw();
  Request b = ValidRaw();
  EXPECT_THAT(ValidateInputs(two, {a.tensor, b.tensor}, {}).status().message(),
              HasSubstr("input \"input\" is given more than once"));
}

TEST(RequestValidationTest, BothEncodingsAtOnce) {
  Request r = ValidRaw();
  r.tensor.fp32_values = r.values;
  EXPECT_THAT(Validate(r.tensor).message(), HasSubstr("both raw and typed contents"));
}

TEST(RequestValidationTest, TypedValuesInTheWrongField) {
  Request r = ValidRaw();
  r.tensor.has_raw = false;
  r.tensor.raw = {};
  r.tensor.other_typed_values = 150528;
  EXPECT_THAT(Validate(r.tensor).message(), HasSubstr("not in the FP32 field"));
}

TEST(RequestValidationTest, Int64ModelInputIsUnimplemented) {
  std::vector<ValueSpec> model = ImageModel();
  model[0].type = ElementType::kInt64;
  Request r = ValidRaw();
  EXPECT_EQ(ValidateInputs(model, {r.tensor}, {}).status().code(),
            absl::StatusCode::kUnimplemented);
}

TEST(RequestValidationTest, RequestedOutputs) {
  std::vector<ValueSpec> outputs(2);
  outputs[0].name = "logits";
  outputs[1].name = "probs";
  EXPECT_EQ(*ResolveRequestedOutputs(outputs, {}), (std::vector<int>{0, 1}));
  EXPECT_EQ(*ResolveRequestedOutputs(outputs, {"probs"}), (std::vector<int>{1}));
  EXPECT_THAT(ResolveRequestedOutputs(outputs, {"x"}).status().message(),
              HasSubstr("unknown output \"x\"; the model's outputs are \"logits\", \"probs\""));
  EXPECT_THAT(ResolveRequestedOutputs(outputs, {"probs", "probs"}).status().message(),
              HasSubstr("more than once"));
}

}  // namespace
}  // namespace normserve

namespace normserve {
namespace {

// Issue 9 item 8: an out-of-range dtype reached validation as "(unset)"; the training
// endpoint's Accumulate converts through the same function, so both now name the value.
TEST(RequestValidationTest, UnknownProtoDtypeIsNamedNotUnset) {
  normserve::v1::Tensor in;
  in.set_name("input");
  in.set_dtype(static_cast<normserve::v1::DataType>(999));
  for (int64_t d : {1, 3, 224, 224}) in.add_shape(d);
  const absl::Status s = Validate(ProtoToRequestTensor(in));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("datatype (unknown dtype 999) is not accepted"));
}

// A dynamic dim other than the batch is bounded by max_dynamic_dim, named in the error.
TEST(RequestValidationTest, DynamicImageSideBeyondTheLimitIsRefused) {
  ValueSpec in;
  in.name = "input";
  in.shape = {-1, 3, -1, -1};
  ValidationOptions options;
  options.max_dynamic_dim = 512;
  std::vector<float> values(3 * 513 * 8, 0.f);
  const std::string raw = Raw(values);
  RequestTensor t;
  t.name = "input";
  t.datatype = "FP32";
  t.shape = {1, 3, 513, 8};
  t.has_raw = true;
  t.raw = raw;
  const absl::Status s = ValidateInputs({in}, {t}, options).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      std::string(s.message()),
      HasSubstr("dim 2 of [1,3,513,8] is 513, the model expects [1, 512] (max_dynamic_dim)"));
  t.shape = {1, 3, 512, 8};
  values.resize(3 * 512 * 8);
  const std::string ok_raw = Raw(values);
  t.raw = ok_raw;
  EXPECT_TRUE(ValidateInputs({in}, {t}, options).ok());
}

}  // namespace
}  // namespace normserve
