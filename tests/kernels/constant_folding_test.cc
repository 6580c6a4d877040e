// Nodes whose inputs are all constants are evaluated at specialization (issue 8 item 1):
// weights transformed in the graph, as a do_constant_folding=False export leaves them,
// never reach the planner. Expected values are computed by hand beside each case.
#include "kernels/constant_folding.h"

#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/engine.h"
#include "kernels/model.h"
#include "kernels/specialize.h"
#include "tests/kernels/onnx_builder.h"

namespace normserve {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

ConstTensor Floats(std::vector<int64_t> shape, std::vector<float> v) {
  ConstTensor t;
  t.shape = std::move(shape);
  t.floats = std::move(v);
  return t;
}
ConstTensor Ints(std::vector<int64_t> shape, std::vector<int64_t> v) {
  ConstTensor t;
  t.type = ElementType::kInt64;
  t.shape = std::move(shape);
  t.ints = std::move(v);
  return t;
}
Attribute IntsAttr(std::vector<int64_t> v) {
  Attribute a;
  a.kind = Attribute::Kind::kInts;
  a.ints = std::move(v);
  return a;
}
Attribute IntAttr(int64_t v) {
  Attribute a;
  a.kind = Attribute::Kind::kInt;
  a.i = v;
  return a;
}

// Specializes a graph with one unused runtime input and the given constant chain, and
// returns the folded value `result`.
absl::StatusOr<ConstTensor> Fold(absl::flat_hash_map<std::string, ConstTensor> consts,
                                 std::vector<Node> nodes, const std::string& result) {
  Graph g;
  g.inputs.push_back(ValueSpec{"x", ElementType::kFloat32, {1}});
  g.initializers = std::move(consts);
  g.nodes = std::move(nodes);
  auto s = Specialize(g, {{1}});
  if (!s.ok()) return s.status();
  if (!s->IsConst(result)) return absl::InternalError("not folded");
  return s->consts.at(result);
}

TEST(ConstantFolding, TransposeAnyPermutation) {
  // w[i][j][k] = 100i + 10j + k, shape [2, 3, 2]; perm [2, 0, 1] -> out[k][i][j].
  std::vector<float> w;
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 2; ++k) w.push_back(100 * i + 10 * j + k);
  auto r = Fold({{"w", Floats({2, 3, 2}, w)}},
                {Node{"t", "Transpose", {"w"}, {"y"}, {{"perm", IntsAttr({2, 0, 1})}}}}, "y");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->shape, (std::vector<int64_t>{2, 2, 3}));
  EXPECT_THAT(r->floats, ElementsAre(0, 10, 20, 100, 110, 120, 1, 11, 21, 101, 111, 121));
}

TEST(ConstantFolding, SliceWithAxesAndNegativeSteps) {
  // w [3, 4] = 0..11; rows 2..0 step -2 (rows 2, 0), cols 1..3 step 2 (col 1, 3).
  std::vector<float> w(12);
  for (int i = 0; i < 12; ++i) w[i] = i;
  auto r = Fold({{"w", Floats({3, 4}, w)},
                 {"s", Ints({2}, {1, -1})},
                 {"e", Ints({2}, {4, -100})},
                 {"a", Ints({2}, {1, 0})},
                 {"p", Ints({2}, {2, -2})}},
                {Node{"sl", "Slice", {"w", "s", "e", "a", "p"}, {"y"}, {}}}, "y");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->shape, (std::vector<int64_t>{2, 2}));
  EXPECT_THAT(r->floats, ElementsAre(9, 11, 1, 3));
}

TEST(ConstantFolding, GatherAndConcatOnAnyAxis) {
  std::vector<float> w = {0, 1, 2, 3, 4, 5};  // [2, 3]
  auto r = Fold({{"w", Floats({2, 3}, w)}, {"i", Ints({2}, {2, -3})}},
                {Node{"g", "Gather", {"w", "i"}, {"g"}, {{"axis", IntAttr(1)}}},
                 Node{"c", "Concat", {"w", "g"}, {"y"}, {{"axis", IntAttr(1)}}}},
                "y");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->shape, (std::vector<int64_t>{2, 5}));
  EXPECT_THAT(r->floats, ElementsAre(0, 1, 2, 2, 0, 3, 4, 5, 5, 3));
}

TEST(ConstantFolding, ArithmeticWhereEqualExpandRange) {
  auto r = Fold({{"w", Floats({3}, {4, 0.25f, 9})},
                 {"two", Floats({}, {2})},
                 {"shape", Ints({2}, {2, 3})},
                 {"lo", Ints({}, {0})},
                 {"hi", Ints({}, {3})},
                 {"one", Ints({}, {1})}},
                {Node{"sq", "Sqrt", {"w"}, {"sq"}, {}},                 // 2, 0.5, 3
                 Node{"rc", "Reciprocal", {"sq"}, {"rc"}, {}},          // 0.5, 2, 1/3
                 Node{"ng", "Neg", {"rc"}, {"ng"}, {}},                 // -0.5, -2, -1/3
                 Node{"eq", "Equal", {"sq", "two"}, {"eq"}, {}},        // 1, 0, 0
                 Node{"wh", "Where", {"eq", "ng", "sq"}, {"wh"}, {}},   // -0.5, 0.5, 3
                 Node{"rg", "Range", {"lo", "hi", "one"}, {"rg"}, {}},  // 0, 1, 2
                 Node{"cf", "Cast", {"rg"}, {"cf"}, {{"to", IntAttr(1)}}},
                 Node{"ad", "Add", {"wh", "cf"}, {"ad"}, {}},  // -0.5, 1.5, 5
                 Node{"ex", "Expand", {"ad", "shape"}, {"y"}, {}}},
                "y");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_THAT(r->floats, ElementsAre(-0.5f, 1.5f, 5, -0.5f, 1.5f, 5));
}

TEST(ConstantFolding, UnknownOperatorOnConstantsNamesTheNode) {
  auto r = Fold({{"w", Floats({2}, {1, 2})}}, {Node{"odd", "Softmax", {"w"}, {"y"}, {}}}, "y");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("odd"));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("constant folding"));
}

TEST(ConstantFolding, ExpandPastTheLimitIsRefused) {
  auto r = Fold({{"w", Floats({1}, {1})}, {"shape", Ints({3}, {1 << 20, 1 << 20, 1 << 20})}},
                {Node{"big", "Expand", {"w", "shape"}, {"y"}, {}}}, "y");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("4294967296"));
}

// A torch.nn.Linear without bias exported with do_constant_folding=False:
// y = MatMul(x, Transpose(W)). Used to fail with "not a runtime tensor".
TEST(ConstantFolding, LinearWithTransposedInitializerMatchesReference) {
  constexpr int kIn = 5, kOut = 3;
  std::vector<float> w(kOut * kIn);  // [out, in] as PyTorch stores it
  for (int i = 0; i < kOut * kIn; ++i) w[i] = std::sin(0.7 * i);
  testing::OnnxBuilder b(17);
  b.Input("x", {-1, kIn});
  b.Output("y", {-1, kOut});
  b.Initializer("weight", {kOut, kIn}, w);
  auto* t = b.Node("Transpose", "weight_t", {"weight"}, {"wt"});
  testing::OnnxBuilder::Ints(t, "perm", {1, 0});
  b.Node("MatMul", "linear", {"x", "wt"}, {"y"});
  auto m = Model::LoadBytes(b.Bytes());
  ASSERT_TRUE(m.ok()) << m.status();
  auto c = CompiledModel::Compile(*m);
  ASSERT_TRUE(c.ok()) << c.status();
  constexpr int kBatch = 2;
  std::vector<float> x(kBatch * kIn);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::cos(0.3 * i);
  std::vector<Tensor> out;
  ASSERT_TRUE((*c)->NewContext()->Run({TensorView{x.data(), {kBatch, kIn}}}, &out).ok());
  ASSERT_EQ(out.size(), 1u);
  ASSERT_EQ(out[0].shape, (std::vector<int64_t>{kBatch, kOut}));
  for (int r = 0; r < kBatch; ++r) {
    for (int o = 0; o < kOut; ++o) {
      double ref = 0;
      for (int k = 0; k < kIn; ++k) ref += double{x[r * kIn + k]} * w[o * kIn + k];
      EXPECT_NEAR(out[0].data[r * kOut + o], ref, 1e-5 * (1 + std::fabs(ref))) << r << "," << o;
    }
  }
}

}  // namespace
}  // namespace normserve
