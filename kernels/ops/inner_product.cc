// Gemm and MatMul lowerings: oneDNN inner product for constant 2-D weights, matmul
// otherwise.
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/lowering_context.h"
#include "kernels/shape_inference.h"
#include "kernels/status_macros.h"
#include "kernels/tensor.h"

namespace normserve {
namespace {

bool IsInnerProduct(const Node& n, const LoweringContext& ctx) {
  return ctx.IsConst(n.inputs[1]) && ctx.DimsOf(n.inputs[0]).size() == 2 &&
         ctx.DimsOf(n.inputs[1]).size() == 2;
}

absl::Status LowerBatchedMatMul(const FusedNode& f, LoweringContext& ctx) {
  const Node& n = f.node;
  const dims y = ctx.DimsOf(f.node.outputs[0]);
  const dims a = PadRank(ctx.DimsOf(n.inputs[0]), y.size()),
             b = PadRank(ctx.DimsOf(n.inputs[1]), y.size());
  dnnl::matmul::desc desc(Plain(a), Plain(b), Plain(y));
  dnnl::matmul::primitive_desc pd(desc, ctx.Attr(f.post_ops), CpuEngine());
  ASSIGN_OR_RETURN(Val av, ctx.PlainVal(n.inputs[0]));
  int bref;
  if (ctx.IsConst(n.inputs[1])) {
    bref = ctx.ConstPlain(Floats(ctx.ConstOf(n.inputs[1])), b);
  } else {
    ASSIGN_OR_RETURN(Val bv, ctx.PlainVal(n.inputs[1]));
    bref = ctx.Ref(Val{bv.buffer, Plain(b)});
  }
  Val dst = ctx.NewVal(Plain(y));
  double batch = 1;
  for (size_t i = 0; i + 2 < y.size(); ++i) batch *= y[i];
  ctx.plan().flops += 2.0 * batch * y[y.size() - 2] * y.back() * a.back();
  ctx.AddStep(absl::StrCat("matmul ", n.name, PostOpsText(f)), pd, dnnl::matmul(pd),
              {{DNNL_ARG_SRC, ctx.Ref(Val{av.buffer, Plain(a)})},
               {DNNL_ARG_WEIGHTS, bref},
               {DNNL_ARG_DST, ctx.Ref(dst)}});
  ctx.Define(f.output, dst);
  return absl::OkStatus();
}

}  // namespace

absl::Status LowerInnerProduct(const FusedNode& f, LoweringContext& ctx) {
  const Node& n = f.node;
  const dims x = ctx.DimsOf(n.inputs[0]);
  const ConstTensor& b = ctx.ConstOf(n.inputs[1]);
  if (!ctx.IsConst(n.inputs[1])) return absl::InvalidArgumentError("B must be constant");
  const bool gemm = n.op == "Gemm";
  const bool trans_b = gemm && n.IntAttr("transB", 0) != 0;
  const int64_t k = x[1], out = trans_b ? b.shape[0] : b.shape[1];
  std::vector<float> w = Floats(b);
  if (!trans_b) {  // oneDNN weights are [out, k]
    std::vector<float> t(w.size());
    for (int64_t r = 0; r < k; ++r) {
      for (int64_t c = 0; c < out; ++c) t[c * k + r] = w[r * out + c];
    }
    w.swap(t);
  }
  const float alpha = gemm ? n.FloatAttr("alpha", 1.f) : 1.f,
              beta = gemm ? n.FloatAttr("beta", 1.f) : 1.f;
  if (alpha != 1.f)
    for (float& v : w) v *= alpha;
  std::vector<float> bias;
  if (gemm && n.inputs.size() > 2 && !n.inputs[2].empty()) {
    if (!ctx.IsConst(n.inputs[2])) return absl::InvalidArgumentError("C must be constant");
    const ConstTensor& c = ctx.ConstOf(n.inputs[2]);
    if (c.size() != out && c.size() != 1)
      return absl::InvalidArgumentError("C must have one value per output");
    for (int64_t o = 0; o < out; ++o)
      bias.push_back(beta * static_cast<float>(c.AsDouble(c.size() == 1 ? 0 : o)));
  }
  using IP = dnnl::inner_product_forward;
  const dims wd = {out, k}, yd = {x[0], out};
  // bf16 plan: bf16 source, weights and destination, f32 bias (as for Conv).
  const md src_md = ctx.ActPlain(x), w_any = ctx.ActAny(wd), dst_any = ctx.ActAny(yd);
  auto desc = bias.empty() ? IP::desc(dnnl::prop_kind::forward_inference, src_md, w_any, dst_any)
                           : IP::desc(dnnl::prop_kind::forward_inference, src_md, w_any,
                                      md({out}, dt::f32, tag::a), dst_any);
  IP::primitive_desc pd(desc, ctx.Attr(f.post_ops), CpuEngine());
  ASSIGN_OR_RETURN(Val src, ctx.InLayout(n.inputs[0], pd.src_desc()));
  Val dst = ctx.NewVal(pd.dst_desc());
  std::vector<std::pair<int, int>> args = {{DNNL_ARG_SRC, ctx.Ref(src)},
                                           {DNNL_ARG_WEIGHTS, ctx.Const(w, wd, pd.weights_desc())},
                                           {DNNL_ARG_DST, ctx.Ref(dst)}};
  if (!bias.empty()) args.push_back({DNNL_ARG_BIAS, ctx.ConstPlain(bias, {out})});
  ctx.plan().flops += 2.0 * x[0] * out * k;
  ctx.AddStep(absl::StrCat("inner_product ", n.name, PostOpsText(f)), pd, IP(pd), std::move(args));
  ctx.Define(f.output, dst);
  return absl::OkStatus();
}

// A MatMul by a constant 2-D matrix is an inner product (weights reordered once); any
// other runs as a (batched, broadcasting) oneDNN matmul.
absl::Status LowerMatMul(const FusedNode& f, LoweringContext& ctx) {
  if (IsInnerProduct(f.node, ctx)) return LowerInnerProduct(f, ctx);
  return LowerBatchedMatMul(f, ctx);
}

absl::StatusOr<Shape> InferGemmShape(const Node& n, const ShapeContext& ctx) {
  ASSIGN_OR_RETURN(Shape x, ctx.InputShape(n, 0));
  ASSIGN_OR_RETURN(Shape b, ctx.InputShape(n, 1));
  if (x.size() != 2 || b.size() != 2) return NodeError(n, "A and B must be 2-D");
  if (n.IntAttr("transA", 0) != 0) return NodeError(n, "transA=1 is not supported");
  const bool tb = n.IntAttr("transB", 0) != 0;
  const int64_t k = tb ? b[1] : b[0], m = tb ? b[0] : b[1];
  if (k != x[1]) {
    return NodeError(
        n, absl::StrCat("A ", ShapeToString(x), " and B ", ShapeToString(b), " do not multiply"));
  }
  return Shape{x[0], m};
}

absl::StatusOr<Shape> InferMatMulShape(const Node& n, const ShapeContext& ctx) {
  ASSIGN_OR_RETURN(Shape x, ctx.InputShape(n, 0));
  ASSIGN_OR_RETURN(Shape b, ctx.InputShape(n, 1));
  if (x.size() < 2 || b.size() < 2 || x.back() != b[b.size() - 2]) {
    return NodeError(
        n, absl::StrCat("A ", ShapeToString(x), " and B ", ShapeToString(b), " do not multiply"));
  }
  Shape xa(x.begin(), x.end() - 2), ba(b.begin(), b.end() - 2);
  auto batch = BroadcastShapes(xa, ba);
  if (!batch.ok()) return NodeError(n, std::string(batch.status().message()));
  Shape s = *batch;
  s.push_back(x[x.size() - 2]);
  s.push_back(b.back());
  return s;
}

}  // namespace normserve
