// PyTorch's exported GELU formulas are recognised and run as one oneDNN GELU (fused into
// the producer where possible); the fused plan equals the unfused one and a float64 GELU.
#include "kernels/gelu_fusion.h"

#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/engine.h"
#include "kernels/model.h"
#include "kernels/post_op_fusion.h"
#include "kernels/specialize.h"
#include "tests/kernels/onnx_builder.h"

namespace normserve {
namespace {

using testing::OnnxBuilder;

std::string TestData(const std::string& name) {
  const char* dir = std::getenv("NORMSERVE_TESTDATA");
  return std::string(dir ? dir : "testdata") + "/" + name;
}

double GeluErf(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }
double GeluTanh(double x) {
  return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

// Runs `bytes` on x ([2, 64] in [-5, 5]); returns the first output and the plan text.
std::vector<float> RunModel(const std::string& bytes, const std::vector<float>& x,
                            std::string* plan) {
  auto m = Model::LoadBytes(bytes);
  EXPECT_TRUE(m.ok()) << m.status();
  if (!m.ok()) return {};
  auto c = CompiledModel::Compile(*m);
  EXPECT_TRUE(c.ok()) << c.status();
  if (!c.ok()) return {};
  if (plan != nullptr) *plan = (*c)->DescribePlan();
  std::vector<Tensor> out;
  EXPECT_TRUE((*c)->NewContext()->Run({TensorView{x.data(), {2, 64}}}, &out).ok());
  return out.empty() ? std::vector<float>{} : out[0].data;
}

std::vector<float> Inputs() {
  std::mt19937 rng(7);
  return testing::RandomVector(2 * 64, &rng, -5.f, 5.f);
}

void ExpectClose(const std::vector<float>& got, const std::vector<float>& x, double (*f)(double),
                 double tol) {
  ASSERT_EQ(got.size(), x.size());
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(got[i], f(x[i]), tol) << "x = " << x[i];
}

// The orders the header lists for the exact GELU, on the graph input "x".
enum class ErfOrder { kExported, kHalfOfBracket, kHalfOfX, kMulBySqrtHalf };

OnnxBuilder ErfGelu(ErfOrder order, float half = 0.5f) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 64});
  b.Output("y", {-1, 64});
  b.Initializer("sqrt2", {}, {std::sqrt(2.f)});
  b.Initializer("rsqrt2", {}, {1.f / std::sqrt(2.f)});
  b.Initializer("one", {}, {1.f});
  b.Initializer("half", {}, {half});
  if (order == ErfOrder::kMulBySqrtHalf) {
    b.Node("Mul", "scale", {"rsqrt2", "x"}, {"d"});
  } else {
    b.Node("Div", "div", {"x", "sqrt2"}, {"d"});
  }
  b.Node("Erf", "erf", {"d"}, {"e"});
  b.Node("Add", "add", {"one", "e"}, {"a"});
  switch (order) {
    case ErfOrder::kExported:
    case ErfOrder::kMulBySqrtHalf:
      b.Node("Mul", "mul", {"x", "a"}, {"m"});
      b.Node("Mul", "mul_half", {"m", "half"}, {"y"});
      break;
    case ErfOrder::kHalfOfBracket:
      b.Node("Mul", "mul_half", {"half", "a"}, {"h"});
      b.Node("Mul", "mul", {"h", "x"}, {"y"});
      break;
    case ErfOrder::kHalfOfX:
      b.Node("Mul", "mul_half", {"x", "half"}, {"p"});
      b.Node("Mul", "mul", {"a", "p"}, {"y"});
      break;
  }
  return b;
}

TEST(GeluFusion, EveryExportedGeluIsFused) {
  for (const std::string name :
       {"gelu_mlp", "gelu_mlp_op13", "gelu_tanh_mlp", "convnext_block", "convnext_block_op13"}) {
    SCOPED_TRACE(name);
    auto m = Model::LoadFile(TestData(name) + "/model.onnx");
    ASSERT_TRUE(m.ok()) << m.status();
    const bool tanh = name == "gelu_tanh_mlp";
    int gelus = 0;
    for (const auto& n : (*m)->graph().nodes) gelus += n.op == (tanh ? "Tanh" : "Erf");
    ASSERT_GT(gelus, 0);
    auto g = Specialize((*m)->graph(), InputShapesFor((*m)->graph(), 1));
    ASSERT_TRUE(g.ok()) << g.status();
    const size_t before = g->nodes.size();
    EXPECT_EQ(FuseGelus(&*g), gelus);
    // Erf: Div, Erf, Add, Mul, Mul become one node; tanh: 9 nodes become one.
    EXPECT_EQ(g->nodes.size(), before - gelus * (tanh ? 8 : 4));
    for (const auto& n : g->nodes) {
      EXPECT_NE(n.op, "Erf");
      EXPECT_NE(n.op, "Tanh");
      if (n.op == "Gelu") {
        EXPECT_EQ(n.StringAttr("approximate"), tanh ? "tanh" : "none");
      }
    }
  }
}

TEST(GeluFusion, ExportedGeluIsAPostOpOfTheGemm) {
  for (const std::string name : {"gelu_mlp", "gelu_tanh_mlp"}) {
    auto m = Model::LoadFile(TestData(name) + "/model.onnx");
    ASSERT_TRUE(m.ok()) << m.status();
    auto c = CompiledModel::Compile(*m);
    ASSERT_TRUE(c.ok()) << c.status();
    const std::string plan = (*c)->DescribePlan();
    const std::string want = name == "gelu_mlp" ? "+eltwise_gelu_erf" : "+eltwise_gelu_tanh";
    EXPECT_NE(plan.find("inner_product /0/Gemm " + want), std::string::npos) << plan;
    EXPECT_EQ(plan.find("binary"), std::string::npos) << plan;
    EXPECT_EQ(plan.find("[custom]"), std::string::npos) << plan;
    EXPECT_EQ(plan.find("\neltwise"), std::string::npos) << plan;
  }
}

TEST(GeluFusion, EveryOperandOrderIsFusedAndMatchesFloat64) {
  const auto x = Inputs();
  for (ErfOrder order : {ErfOrder::kExported, ErfOrder::kHalfOfBracket, ErfOrder::kHalfOfX,
                         ErfOrder::kMulBySqrtHalf}) {
    SCOPED_TRACE(static_cast<int>(order));
    std::string plan;
    const auto y = RunModel(ErfGelu(order).Bytes(), x, &plan);
    EXPECT_NE(plan.find("eltwise_gelu_erf"), std::string::npos) << plan;
    EXPECT_EQ(plan.find("binary"), std::string::npos) << plan;
    ExpectClose(y, x, GeluErf, 1e-5);
  }
}

TEST(GeluFusion, FusedEqualsUnfused) {
  const auto x = Inputs();
  std::string fused_plan, unfused_plan;
  const auto fused = RunModel(ErfGelu(ErfOrder::kExported).Bytes(), x, &fused_plan);
  // Reading erf's output elsewhere (a second graph output) keeps the chain apart: Erf
  // runs as its own step between the binaries.
  OnnxBuilder b = ErfGelu(ErfOrder::kExported);
  b.Output("e", {-1, 64});
  const auto unfused = RunModel(b.Bytes(), x, &unfused_plan);
  EXPECT_NE(fused_plan.find("eltwise_gelu_erf"), std::string::npos) << fused_plan;
  EXPECT_EQ(unfused_plan.find("gelu"), std::string::npos) << unfused_plan;
  EXPECT_NE(unfused_plan.find("erf erf [custom]"), std::string::npos) << unfused_plan;
  ASSERT_EQ(fused.size(), unfused.size());
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(fused[i], unfused[i], 1e-5) << "x = " << x[i];
  ExpectClose(unfused, x, GeluErf, 1e-5);
}

TEST(GeluFusion, ANearMissIsNotFusedAndErfRunsAlone) {
  const auto x = Inputs();
  std::string plan;
  const auto y = RunModel(ErfGelu(ErfOrder::kExported, 0.6f).Bytes(), x, &plan);
  EXPECT_EQ(plan.find("gelu"), std::string::npos) << plan;
  ExpectClose(
      y, x, [](double v) { return 1.2 * GeluErf(v); }, 1e-5);
}

TEST(GeluFusion, TanhWithPowCubeIsFused) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 64});
  b.Output("y", {-1, 64});
  b.Initializer("three", {}, {3.f});
  b.Initializer("c", {}, {0.044715f});
  b.Initializer("k", {}, {std::sqrt(2.f / static_cast<float>(M_PI))});
  b.Initializer("one", {}, {1.f});
  b.Initializer("half", {}, {0.5f});
  b.Node("Pow", "cube", {"x", "three"}, {"x3"});
  b.Node("Mul", "cx3", {"x3", "c"}, {"q"});
  b.Node("Add", "inner", {"q", "x"}, {"s"});
  b.Node("Mul", "scale", {"s", "k"}, {"u"});
  b.Node("Tanh", "tanh", {"u"}, {"t"});
  b.Node("Add", "add", {"t", "one"}, {"a"});
  b.Node("Mul", "mul", {"a", "x"}, {"m"});
  b.Node("Mul", "mul_half", {"half", "m"}, {"y"});
  const auto x = Inputs();
  std::string plan;
  const auto y = RunModel(b.Bytes(), x, &plan);
  EXPECT_NE(plan.find("eltwise_gelu_tanh"), std::string::npos) << plan;
  ExpectClose(y, x, GeluTanh, 1e-5);
}

TEST(GeluFusion, UnknownApproximationNamesNodeAndValue) {
  Node n;
  n.name = "gelu_7";
  n.op = "Gelu";
  Attribute a;
  a.kind = Attribute::Kind::kString;
  a.s = "fast";
  n.attrs["approximate"] = a;
  SpecializedGraph g;
  auto acts = ActivationOf(n, g);
  ASSERT_FALSE(acts.ok());
  EXPECT_NE(acts.status().message().find("gelu_7"), std::string::npos) << acts.status();
  EXPECT_NE(acts.status().message().find("approximate \"fast\""), std::string::npos)
      << acts.status();
  n.attrs["approximate"].s = "tanh";
  acts = ActivationOf(n, g);
  ASSERT_TRUE(acts.ok());
  EXPECT_EQ((*acts)[0].alg, dnnl::algorithm::eltwise_gelu_tanh);
}

}  // namespace
}  // namespace normserve
