// A malformed, truncated or unsupported model fails the load with an error naming the
// node and the reason; nothing half-loaded is returned.
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/model.h"
#include "kernels/tensor.h"
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
  EXPECT_EQ(Model::LoadFile("/nonexistent/model.onnx").status().code(),
            absl::StatusCode::kNotFound);
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

namespace normserve {
namespace {

std::string ReluModel(std::vector<int64_t> shape) {
  testing::OnnxBuilder b;
  b.Input("x", shape);
  b.Output("y", shape);
  b.Node("Relu", "relu", {"x"}, {"y"});
  return b.Bytes();
}

// Issue 9: a declared input of [1, 2^62, 2^62, 4] reached oneDNN and killed the server
// with SIGFPE at every start; [1, 3, 2^31, 2^31] loaded and would have needed exabytes.
TEST(ModelLoad, HugeDeclaredDimsAreRefusedNamingTheLimit) {
  const int64_t big = int64_t{1} << 62, large = int64_t{1} << 31;
  for (const auto& shape :
       {std::vector<int64_t>{1, big, big, 4}, std::vector<int64_t>{1, 3, large, large},
        std::vector<int64_t>{1, 0, 4, 4}}) {
    auto m = Model::LoadBytes(ReluModel(shape));
    ASSERT_FALSE(m.ok()) << ShapeToString(shape);
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(m.status().message()), ::testing::HasSubstr("graph value \"x\": dim "));
    EXPECT_THAT(std::string(m.status().message()),
                ::testing::HasSubstr("at most 4294967296 elements"));
  }
  EXPECT_TRUE(Model::LoadBytes(ReluModel({1, 3, 64, 64})).ok());
}

// External data names a path the loader would read relative to the working directory;
// the refusal must not depend on (or tell) whether that path exists.
TEST(ModelLoad, ExternalDataIsRefusedWithoutTouchingThePath) {
  for (const std::string location : {"/etc/passwd", "does/not/exist.bin"}) {
    testing::OnnxBuilder b;
    b.Input("x", {1, 4});
    b.Output("y", {1, 4});
    auto* t = b.proto().mutable_graph()->add_initializer();
    t->set_name("w");
    t->set_data_type(onnx::TensorProto::FLOAT);
    t->add_dims(4);
    t->set_data_location(onnx::TensorProto::EXTERNAL);
    auto* e = t->add_external_data();
    e->set_key("location");
    e->set_value(location);
    b.Node("Add", "add", {"x", "w"}, {"y"});
    auto m = Model::LoadBytes(b.Bytes());
    ASSERT_FALSE(m.ok());
    EXPECT_EQ(std::string(m.status().message()),
              "initializer \"w\": external tensor data is not supported; embed the weights");
  }
}

}  // namespace
}  // namespace normserve
