// A malformed, truncated or unsupported model fails the load with an error naming the
// node and the reason; nothing half-loaded is returned.
#include "kernels/model.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/kernels/conv_bn_fixture.h"
#include "tests/kernels/onnx_builder.h"

namespace normserve {
namespace {

using ::testing::HasSubstr;

TEST(ModelLoad, ValidModelLoadsWithSignature) {
  testing::ConvBnFixture f;
  auto m = Model::LoadBytes(f.onnx);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ((*m)->inputs().size(), 1u);
  EXPECT_EQ((*m)->inputs()[0].shape, (std::vector<int64_t>{-1, 3, 9, 9}));
  EXPECT_EQ((*m)->opset(), 13);
}

TEST(ModelLoad, TruncatedFileIsRefused) {
  testing::ConvBnFixture f;
  for (size_t keep : {f.onnx.size() / 2, f.onnx.size() - 7, size_t{3}}) {
    auto m = Model::LoadBytes(f.onnx.substr(0, keep));
    ASSERT_FALSE(m.ok()) << "kept " << keep;
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(ModelLoad, GarbageAndEmptyAreRefused) {
  EXPECT_EQ(Model::LoadBytes("").status().code(), absl::StatusCode::kInvalidArgument);
  auto m = Model::LoadBytes(std::string(1000, '\xff'));
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("not a valid ONNX"));
}

TEST(ModelLoad, UnsupportedOperatorNamesTheNode) {
  testing::OnnxBuilder b;
  b.Input("x", {-1, 4});
  b.Output("y", {-1, 4});
  b.Node("Relu", "first", {"x"}, {"h"});
  b.Node("Hardmax", "the_odd_one", {"h"}, {"y"});
  auto m = Model::LoadBytes(b.Bytes());
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("the_odd_one"));
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("Hardmax"));
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("unsupported operator"));
}

TEST(ModelLoad, ShapeErrorNamesTheNode) {
  testing::OnnxBuilder b;
  b.Input("x", {-1, 4, 5, 5});
  b.Output("y", {-1, 2, 5, 5});
  b.Initializer("w", {2, 3, 1, 1}, std::vector<float>(6, 1.f));  // expects 3 channels
  auto* conv = b.Node("Conv", "bad_conv", {"x", "w"}, {"y"});
  testing::OnnxBuilder::Ints(conv, "kernel_shape", {1, 1});
  auto m = Model::LoadBytes(b.Bytes());
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("bad_conv"));
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("input channels 4"));
}

TEST(ModelLoad, MissingFileIsNotFound) {
  EXPECT_EQ(Model::LoadFile("/nonexistent/model.onnx").status().code(), absl::StatusCode::kNotFound);
}

TEST(ModelLoad, OversizedModelIsRefusedBeforeParsing) {
  testing::ConvBnFixture f;
  LoadOptions o;
  o.max_model_bytes = 100;
  auto m = Model::LoadBytes(f.onnx, o);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("limit is 100"));
}

}  // namespace
}  // namespace normserve
