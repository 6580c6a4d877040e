// ReduceMean/ReduceMax/ReduceSum/ReduceL2 lowering: oneDNN reduction on the plain layout.
// Axes come from the attribute or (ReduceSum opset 13, every reduction from opset 18) a
// constant input; no axes reduce everything unless noop_with_empty_axes asks for identity.
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/lowering_context.h"
#include "kernels/shape_inference.h"
#include "kernels/status_macros.h"

namespace normserve {
namespace {

// One flag per input dim: reduced or not. Axes are checked here, so shape inference and
// lowering agree on them.
absl::StatusOr<std::vector<bool>> ReducedDims(const Node& n, const ShapeContext& ctx, size_t rank) {
  ASSIGN_OR_RETURN(std::vector<int64_t> axes, AxesOf(n, ctx, 1));
  if (axes.empty() && n.IntAttr("noop_with_empty_axes", 0) != 0)
    return std::vector<bool>(rank, false);
  std::vector<bool> red(rank, axes.empty());
  for (int64_t a : axes) {
    ASSIGN_OR_RETURN(int64_t k, NormAxis(n, a, rank));
    red[k] = true;
  }
  return red;
}

struct Reduction {
  dnnl::algorithm alg;
  float p;
  const char* name;
};

Reduction ReductionOf(const std::string& op) {
  if (op == "ReduceMax") return {dnnl::algorithm::reduction_max, 0.f, "reduce_max"};
  if (op == "ReduceSum") return {dnnl::algorithm::reduction_sum, 0.f, "reduce_sum"};
  // sqrt(sum x^2): oneDNN's Lp norm with p = 2 (eps 0: no floor under the sum).
  if (op == "ReduceL2") return {dnnl::algorithm::reduction_norm_lp_sum, 2.f, "reduce_l2"};
  return {dnnl::algorithm::reduction_mean, 0.f, "reduce_mean"};
}

}  // namespace

absl::Status LowerReduce(const FusedNode& f, LoweringContext& ctx) {
  const Node& n = f.node;
  const dims x = ctx.DimsOf(n.inputs[0]), y = ctx.DimsOf(n.outputs[0]);
  ASSIGN_OR_RETURN(std::vector<bool> red, ReducedDims(n, ShapeContext(ctx.graph()), x.size()));
  // Output dims with the reduced axes kept as 1 (oneDNN keeps rank).
  dims kept = x;
  bool any = false;
  for (size_t i = 0; i < x.size(); ++i) {
    if (red[i]) kept[i] = 1;
    any |= red[i];
  }
  if (!any) {
    // noop_with_empty_axes: the output is the input.
    ASSIGN_OR_RETURN(Val v, ctx.Get(n.inputs[0]));
    ctx.Define(f.output, v);
    return absl::OkStatus();
  }
  const Reduction r = ReductionOf(n.op);
  ASSIGN_OR_RETURN(Val src, ctx.PlainVal(n.inputs[0]));
  dnnl::reduction::primitive_desc pd(dnnl::reduction::desc(r.alg, src.desc, Plain(kept), r.p, 0.f),
                                     ctx.Attr(), CpuEngine());
  Val dst = ctx.NewVal(Plain(kept));
  ctx.AddStep(absl::StrCat(r.name, " ", n.name), pd, dnnl::reduction(pd),
              {{DNNL_ARG_SRC, ctx.Ref(src)}, {DNNL_ARG_DST, ctx.Ref(dst)}});
  ctx.Define(f.output, Val{dst.buffer, Plain(y)});
  return absl::OkStatus();
}

absl::StatusOr<Shape> InferReduceShape(const Node& n, const ShapeContext& ctx) {
  ASSIGN_OR_RETURN(Shape x, ctx.InputShape(n, 0));
  ASSIGN_OR_RETURN(std::vector<bool> red, ReducedDims(n, ctx, x.size()));
  const bool keep = n.IntAttr("keepdims", 1) != 0;
  Shape s;
  for (size_t i = 0; i < x.size(); ++i) {
    if (!red[i])
      s.push_back(x[i]);
    else if (keep)
      s.push_back(1);
  }
  return s;
}

}  // namespace normserve
