// Pad, Slice, Split and Expand on runtime tensors: the forms PyTorch's exporter does not
// write (parity_test covers the ones it does) against naive float64 references, and the
// refusals, which must name the node and the offending value.
#include <climits>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/engine.h"
#include "kernels/model.h"
#include "kernels/plan.h"
#include "tests/kernels/onnx_builder.h"

namespace normserve {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using testing::OnnxBuilder;

void IntInitializer(OnnxBuilder& b, const std::string& name, const std::vector<int64_t>& v) {
  auto* t = b.proto().mutable_graph()->add_initializer();
  t->set_name(name);
  t->set_data_type(onnx::TensorProto::INT64);
  t->add_dims(static_cast<int64_t>(v.size()));
  for (int64_t x : v) t->add_int64_data(x);
}

void Str(onnx::NodeProto* n, const std::string& key, const std::string& v) {
  auto* a = n->add_attribute();
  a->set_name(key);
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s(v);
}

int64_t Count(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

// Loads, compiles and runs the model on `x`; all outputs.
absl::StatusOr<std::vector<Tensor>> RunModel(const std::string& bytes, const std::vector<float>& x,
                                             const std::vector<int64_t>& shape,
                                             std::string* plan = nullptr) {
  auto m = Model::LoadBytes(bytes);
  if (!m.ok()) return m.status();
  auto c = CompiledModel::Compile(*m);
  if (!c.ok()) return c.status();
  if (plan != nullptr) {
    auto p = (*c)->PlanFor(InputShapes{shape});
    if (!p.ok()) return p.status();
    for (const PlanStep& step : (*p)->steps) *plan += step.what + "\n";
  }
  std::vector<Tensor> out;
  absl::Status s = (*c)->NewContext()->Run({TensorView{x.data(), shape}}, &out);
  if (!s.ok()) return s;
  return out;
}

absl::Status LoadAndCompile(const std::string& bytes) {
  auto m = Model::LoadBytes(bytes);
  if (!m.ok()) return m.status();
  return CompiledModel::Compile(*m).status();
}

// Element of a row-major [n, c, h, w] tensor.
double At(const std::vector<float>& x, const std::vector<int64_t>& s, int64_t n, int64_t c,
          int64_t h, int64_t w) {
  return x[((n * s[1] + c) * s[2] + h) * s[3] + w];
}

const std::vector<int64_t> kShape = {2, 3, 5, 6};

std::vector<float> Input() {
  std::mt19937 rng(7);
  return testing::RandomVector(Count(kShape), &rng);
}

// Constant pad with a non-zero value on W only (opset 11+ input form, value as input).
TEST(PadOp, ConstantValueOnOneAxis) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 3, 5, 6});
  b.Output("y", {-1, 3, 5, 9});
  IntInitializer(b, "pads", {0, 0, 0, 1, 0, 0, 0, 2});
  b.Initializer("value", {}, {2.5f});
  Str(b.Node("Pad", "pad_w", {"x", "pads", "value"}, {"y"}), "mode", "constant");
  const std::vector<float> x = Input();
  auto out = RunModel(b.Bytes(), x, kShape);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ((*out)[0].shape, (std::vector<int64_t>{2, 3, 5, 9}));
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t h = 0; h < 5; ++h)
        for (int64_t w = 0; w < 9; ++w) {
          const double want = w >= 1 && w < 7 ? At(x, kShape, n, c, h, w - 1) : 2.5;
          ASSERT_EQ((*out)[0].data[((n * 3 + c) * 5 + h) * 9 + w], want) << n << c << h << w;
        }
}

TEST(PadOp, RefusalsNameTheNodeAndThePads) {
  struct Case {
    std::string mode;
    std::vector<int64_t> pads;
    std::string why;
  };
  for (const Case& k :
       std::vector<Case>{{"wrap", {0, 0, 1, 1, 0, 0, 1, 1}, "\"wrap\" is not supported"},
                         {"reflect", {0, 0, 5, 0, 0, 0, 0, 0}, "smaller than the dim"},
                         {"constant", {0, 0, 1, 1}, "expected 8"},
                         {"constant", {0, 0, -5, 0, 0, 0, 0, 0}, "leave no elements"},
                         {"edge", {0, 0, int64_t{1} << 40, 0, 0, 0, 0, 0}, "1048576"}}) {
    OnnxBuilder b(13);
    b.Input("x", {-1, 3, 5, 6});
    b.Output("y", {-1, -1, -1, -1});
    IntInitializer(b, "pads", k.pads);
    Str(b.Node("Pad", "the_pad", {"x", "pads"}, {"y"}), "mode", k.mode);
    absl::Status s = LoadAndCompile(b.Bytes());
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << k.mode;
    EXPECT_THAT(std::string(s.message()), AllOf(HasSubstr("the_pad"), HasSubstr(k.why))) << k.mode;
  }
}

// Opset 9: starts/ends/axes are attributes; a negative start and an end past the dim.
TEST(SliceOp, AttributeFormBeforeOpset10) {
  OnnxBuilder b(9);
  b.Input("x", {-1, 3, 5, 6});
  b.Output("y", {2, 2, 5, 4});
  auto* s = b.Node("Slice", "slice", {"x"}, {"y"});
  OnnxBuilder::Ints(s, "starts", {-2, 2});
  OnnxBuilder::Ints(s, "ends", {1000, 1000});
  OnnxBuilder::Ints(s, "axes", {1, 3});
  const std::vector<float> x = Input();
  auto out = RunModel(b.Bytes(), x, kShape);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ((*out)[0].shape, (std::vector<int64_t>{2, 2, 5, 4}));
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t c = 0; c < 2; ++c)
      for (int64_t h = 0; h < 5; ++h)
        for (int64_t w = 0; w < 4; ++w) {
          ASSERT_EQ((*out)[0].data[((n * 2 + c) * 5 + h) * 4 + w],
                    At(x, kShape, n, c + 1, h, w + 2));
        }
}

TEST(SliceOp, StepsOnEveryAxisAtOnce) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 3, 5, 6});
  b.Output("y", {1, 2, 2, 2});
  IntInitializer(b, "starts", {0, 4, 1});
  IntInitializer(b, "ends", {3, 0, 6});
  IntInitializer(b, "axes", {1, 2, 3});
  IntInitializer(b, "steps", {2, 1, 3});
  b.Node("Slice", "slice", {"x", "starts", "ends", "axes", "steps"}, {"y"});
  // ends 0 < start 4 on H: empty, refused.
  absl::Status empty = LoadAndCompile(b.Bytes());
  EXPECT_THAT(std::string(empty.message()),
              AllOf(HasSubstr("slice"), HasSubstr("axis 2"), HasSubstr("empty")));

  OnnxBuilder ok(13);
  ok.Input("x", {-1, 3, 5, 6});
  ok.Output("y", {-1, 2, 2, 2});
  IntInitializer(ok, "starts", {0, 1, 1});
  IntInitializer(ok, "ends", {3, 5, 6});
  IntInitializer(ok, "axes", {1, 2, 3});
  IntInitializer(ok, "steps", {2, 3, 3});
  ok.Node("Slice", "slice", {"x", "starts", "ends", "axes", "steps"}, {"y"});
  const std::vector<float> x = Input();
  auto out = RunModel(ok.Bytes(), x, kShape);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ((*out)[0].shape, (std::vector<int64_t>{2, 2, 2, 2}));
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t c = 0; c < 2; ++c)
      for (int64_t h = 0; h < 2; ++h)
        for (int64_t w = 0; w < 2; ++w) {
          ASSERT_EQ((*out)[0].data[((n * 2 + c) * 2 + h) * 2 + w],
                    At(x, kShape, n, 2 * c, 1 + 3 * h, 1 + 3 * w));
        }
}

// torch.flip(x, [2]) exports as Slice(starts -1, ends INT64_MIN, steps -1); here with a
// step of -2 on W too, from index 4 (clamped from 1000) down to the end.
TEST(SliceOp, NegativeStepsReadBackwards) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 3, 5, 6});
  b.Output("y", {-1, 3, 5, 3});
  IntInitializer(b, "starts", {-1, 1000});
  IntInitializer(b, "ends", {INT64_MIN, -1000});
  IntInitializer(b, "axes", {2, 3});
  IntInitializer(b, "steps", {-1, -2});
  b.Node("Slice", "flip", {"x", "starts", "ends", "axes", "steps"}, {"y"});
  const std::vector<float> x = Input();
  auto out = RunModel(b.Bytes(), x, kShape);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ((*out)[0].shape, (std::vector<int64_t>{2, 3, 5, 3}));
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t h = 0; h < 5; ++h)
        for (int64_t w = 0; w < 3; ++w) {
          ASSERT_EQ((*out)[0].data[((n * 3 + c) * 5 + h) * 3 + w],
                    At(x, kShape, n, c, 4 - h, 5 - 2 * w));
        }
}

TEST(SliceOp, ZeroStepAndEmptyBackwardSliceAreRefusedNamingTheNode) {
  for (int64_t step : {0, -1}) {
    OnnxBuilder b(13);
    b.Input("x", {-1, 3, 5, 6});
    b.Output("y", {-1, -1, -1, -1});
    IntInitializer(b, "starts", {1});
    IntInitializer(b, "ends", {3});  // forwards: fine for step 1, empty for -1
    IntInitializer(b, "axes", {2});
    IntInitializer(b, "steps", {step});
    b.Node("Slice", "bad_slice", {"x", "starts", "ends", "axes", "steps"}, {"y"});
    absl::Status s = LoadAndCompile(b.Bytes());
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.message()), AllOf(HasSubstr("bad_slice"), HasSubstr("axis 2"),
                                                HasSubstr(step == 0 ? "step 0" : "empty")));
  }
}

// Three equal parts along C without sizes; the first part is the dense start of the
// input at batch 1 and is used in place, the others are copied by one reorder each.
TEST(SplitOp, EqualPartsWithoutSizesAndTheFirstPartIsAView) {
  for (int64_t batch : {1, 2}) {
    const std::vector<int64_t> shape = {batch, 3, 5, 6};
    OnnxBuilder b(13);
    b.Input("x", {-1, 3, 5, 6});
    b.Output("a", {-1, 1, 5, 6});
    b.Output("b", {-1, 1, 5, 6});
    b.Output("c", {-1, 1, 5, 6});
    auto* s = b.Node("Split", "split_c", {"x"}, {"a", "b", "c"});
    OnnxBuilder::Int(s, "axis", 1);
    std::mt19937 rng(3);
    const std::vector<float> x = testing::RandomVector(Count(shape), &rng);
    std::string plan;
    auto out = RunModel(b.Bytes(), x, shape, &plan);
    ASSERT_TRUE(out.ok()) << out.status();
    ASSERT_EQ(out->size(), 3u);
    for (int64_t k = 0; k < 3; ++k) {
      for (int64_t n = 0; n < batch; ++n)
        for (int64_t i = 0; i < 30; ++i)
          ASSERT_EQ((*out)[k].data[n * 30 + i], x[(n * 3 + k) * 30 + i]);
    }
    EXPECT_EQ(plan.find("split_c output 0") == std::string::npos, batch == 1) << plan;
    EXPECT_NE(plan.find("split_c output 2"), std::string::npos) << plan;
  }
}

TEST(SplitOp, SizesThatDoNotCoverTheDimAreRefused) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 3, 5, 6});
  b.Output("a", {-1, -1, -1, -1});
  b.Output("b", {-1, -1, -1, -1});
  IntInitializer(b, "sizes", {2, 3});
  b.Node("Split", "split_w", {"x", "sizes"}, {"a", "b"});
  // W is 6: 2 + 3 = 5.
  auto* axis = b.proto().mutable_graph()->mutable_node(0);
  OnnxBuilder::Int(axis, "axis", -1);
  absl::Status s = LoadAndCompile(b.Bytes());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              AllOf(HasSubstr("split_w"), HasSubstr("add up to 5"), HasSubstr("is 6")));
}

// [1, 3, 1, 6] expanded to [2, 1, 1, 4, 1]: [2, 1, 3, 4, 6], the rank grows on the left.
// (Fixed shapes: the engine splits a batch along dim 0, which this output does not have.)
TEST(ExpandOp, BroadcastsOnesAndPrependsAxes) {
  const std::vector<int64_t> shape = {1, 3, 1, 6};
  OnnxBuilder b(13);
  b.Input("x", shape);
  b.Output("y", {2, 1, 3, 4, 6});
  IntInitializer(b, "shape", {2, 1, 1, 4, 1});
  b.Node("Expand", "expand", {"x", "shape"}, {"y"});
  std::mt19937 rng(5);
  const std::vector<float> x = testing::RandomVector(Count(shape), &rng);
  auto out = RunModel(b.Bytes(), x, shape);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ((*out)[0].shape, (std::vector<int64_t>{2, 1, 3, 4, 6}));
  for (int64_t r = 0; r < 2; ++r)
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t h = 0; h < 4; ++h)
        for (int64_t w = 0; w < 6; ++w) {
          ASSERT_EQ((*out)[0].data[((r * 3 + c) * 4 + h) * 6 + w], x[c * 6 + w]);
        }

  OnnxBuilder bad(13);
  bad.Input("x", shape);
  bad.Output("y", {-1, -1, -1, -1});
  IntInitializer(bad, "shape", {4, 5});
  bad.Node("Expand", "bad_expand", {"x", "shape"}, {"y"});
  absl::Status s = LoadAndCompile(bad.Bytes());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              AllOf(HasSubstr("bad_expand"), HasSubstr("do not broadcast")));
}

}  // namespace
}  // namespace normserve
