// Specialization to concrete input shapes: dynamic dims beyond the batch, refusals that
// name the input and dim, and shapes a model file can make overflow (issue 9 item 1).
#include "kernels/specialize.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/model.h"
#include "kernels/plan.h"
#include "tests/kernels/onnx_builder.h"

namespace normserve {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

// x [N, 3, H, W] -> 3x3 conv (4 filters, pad 1, stride 2) -> Relu.
std::string DynamicImageConv() {
  testing::OnnxBuilder b;
  b.Input("x", {-1, 3, -1, -1});
  b.Output("y", {-1, 4, -1, -1});
  b.Initializer("w", {4, 3, 3, 3}, std::vector<float>(4 * 3 * 3 * 3, 0.5f));
  auto* conv = b.Node("Conv", "conv", {"x", "w"}, {"h"});
  testing::OnnxBuilder::Ints(conv, "kernel_shape", {3, 3});
  testing::OnnxBuilder::Ints(conv, "pads", {1, 1, 1, 1});
  testing::OnnxBuilder::Ints(conv, "strides", {2, 2});
  b.Node("Relu", "relu", {"h"}, {"y"});
  return b.Bytes();
}

TEST(Specialize, DynamicHeightAndWidthTakeAnyPositiveValue) {
  auto m = Model::LoadBytes(DynamicImageConv());
  ASSERT_TRUE(m.ok()) << m.status();
  auto g = Specialize((*m)->graph(), {{2, 3, 17, 30}});
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_EQ(g->outputs.size(), 1u);
  // ONNX: floor((17 + 2 - 3) / 2) + 1 = 9, floor((30 + 2 - 3) / 2) + 1 = 15.
  EXPECT_EQ(g->outputs[0].shape, (std::vector<int64_t>{2, 4, 9, 15}));
  auto plan = BuildPlan(**m, {{2, 3, 17, 30}}, CompileOptions{});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ((*plan)->batch, 2);
  EXPECT_EQ((*plan)->outputs[0].shape, (std::vector<int64_t>{2, 4, 9, 15}));
  // At least the weights; the conv's chosen layout may pad the filters to a block.
  EXPECT_GE((*plan)->const_bytes, 4u * 3 * 3 * 3 * sizeof(float));
}

TEST(Specialize, InputShapesForFillsDynamicDims) {
  auto m = Model::LoadBytes(DynamicImageConv());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(InputShapesFor((*m)->graph(), 5),
            (std::vector<std::vector<int64_t>>{{5, 3, 224, 224}}));
  EXPECT_EQ(InputShapesFor((*m)->graph(), 1, 31),
            (std::vector<std::vector<int64_t>>{{1, 3, 31, 31}}));
  Graph fixed;
  fixed.inputs.push_back(ValueSpec{"x", ElementType::kFloat32, {1, 3, -1}});
  EXPECT_EQ(InputShapesFor(fixed, 8), (std::vector<std::vector<int64_t>>{{1, 3, 224}}));
}

TEST(Specialize, RefusalsNameTheInputDimAndValues) {
  auto m = Model::LoadBytes(DynamicImageConv());
  ASSERT_TRUE(m.ok()) << m.status();
  const Graph& graph = (*m)->graph();
  auto count = Specialize(graph, {{1, 3, 8, 8}, {1}});
  EXPECT_EQ(count.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(count.status().message()), HasSubstr("1 inputs; got 2"));
  auto rank = Specialize(graph, {{1, 3, 8}});
  EXPECT_THAT(std::string(rank.status().message()), AllOf(HasSubstr("\"x\""), HasSubstr("rank 4")));
  auto fixed = Specialize(graph, {{1, 5, 8, 8}});
  EXPECT_EQ(fixed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      std::string(fixed.status().message()),
      AllOf(HasSubstr("\"x\""), HasSubstr("dim 1"), HasSubstr("fixed at 3"), HasSubstr("given 5")));
  auto zero = Specialize(graph, {{1, 3, 0, 8}});
  EXPECT_THAT(std::string(zero.status().message()),
              AllOf(HasSubstr("dim 2"), HasSubstr("given 0")));
}

std::string ReluModel(std::vector<int64_t> shape) {
  testing::OnnxBuilder b;
  b.Input("x", shape);
  b.Output("y", shape);
  b.Node("Relu", "relu", {"x"}, {"y"});
  return b.Bytes();
}

// Used to kill the server with SIGFPE inside oneDNN's reorder creation. Declared this way
// the import refuses it (model_load_test); given as the concrete shape of dynamic dims, the
// specialization must refuse it too.
TEST(Specialize, HugeInputIsRefusedNamingTheLimit) {
  constexpr int64_t k62 = int64_t{1} << 62, k31 = int64_t{1} << 31;
  auto m = Model::LoadBytes(ReluModel({-1, -1, -1, -1}));
  ASSERT_TRUE(m.ok()) << m.status();
  for (const auto& shape :
       {std::vector<int64_t>{1, k62, k62, 4}, std::vector<int64_t>{1, 3, k31, k31}}) {
    auto g = Specialize((*m)->graph(), {shape});
    ASSERT_FALSE(g.ok());
    EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(
        std::string(g.status().message()),
        AllOf(HasSubstr("\"x\""), HasSubstr("4294967296"), HasSubstr(ShapeToString(shape))));
  }
}

TEST(Specialize, ValuesGrowingPastTheLimitAreRefused) {
  // Each input is within the limit; their broadcast sum is 2^34 elements.
  testing::OnnxBuilder b;
  b.Input("a", {1 << 17, 1});
  b.Input("c", {1, 1 << 17});
  b.Output("y", {-1, -1});  // declared dynamic: the import checks declared dims itself
  b.Node("Add", "outer_sum", {"a", "c"}, {"y"});
  auto m = Model::LoadBytes(b.Bytes());
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()),
              AllOf(HasSubstr("outer_sum"), HasSubstr("\"y\""), HasSubstr("4294967296")));
}

TEST(Specialize, WindowGeometryIsBoundedBeforeArithmetic) {
  for (const char* attr : {"strides", "pads", "dilations"}) {
    testing::OnnxBuilder b;
    b.Input("x", {-1, 1, 8, 8});
    b.Output("y", {-1, 1, -1, -1});
    auto* pool = b.Node("MaxPool", "pool", {"x"}, {"y"});
    testing::OnnxBuilder::Ints(pool, "kernel_shape", {2, 2});
    const int64_t huge = int64_t{1} << 62;
    if (std::string(attr) == "pads") {
      testing::OnnxBuilder::Ints(pool, attr, {huge, huge, huge, huge});
    } else {
      testing::OnnxBuilder::Ints(pool, attr, {huge, 1});
    }
    auto m = Model::LoadBytes(b.Bytes());
    ASSERT_FALSE(m.ok()) << attr;
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(m.status().message()), AllOf(HasSubstr("pool"), HasSubstr("1048576")))
        << attr;
  }
}

}  // namespace
}  // namespace normserve
