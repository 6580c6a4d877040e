// ReduceMean lowering: oneDNN reduction on the plain layout.
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/lowering_context.h"
#include "kernels/shape_inference.h"
#include "kernels/status_macros.h"

namespace normserve {
namespace {

using md = dnnl::memory::desc;
using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;
using dims = dnnl::memory::dims;

}  // namespace

absl::Status LowerReduceMean(const FusedNode& f, LoweringContext& ctx) {
  const Node& n = f.node;
  const dims x = ctx.DimsOf(n.inputs[0]), y = ctx.DimsOf(n.outputs[0]);
  dims kept = x;
  // Output dims with the reduced axes kept as 1 (oneDNN keeps rank).
  std::vector<int64_t> axes = n.IntsAttr("axes");
  if (axes.empty() && n.inputs.size() > 1 && ctx.IsConst(n.inputs[1])) {
    const ConstTensor& c = ctx.ConstOf(n.inputs[1]);
    for (int64_t i = 0; i < c.size(); ++i) axes.push_back(c.AsInt(i));
  }
  if (axes.empty()) {
    for (size_t i = 0; i < x.size(); ++i) axes.push_back(i);
  }
  for (int64_t a : axes) kept[a < 0 ? a + x.size() : a] = 1;
  ASSIGN_OR_RETURN(Val src, ctx.PlainVal(n.inputs[0]));
  dnnl::reduction::primitive_desc pd(
      dnnl::reduction::desc(dnnl::algorithm::reduction_mean, src.desc, Plain(kept), 0.f, 0.f),
      ctx.Attr(), CpuEngine());
  Val dst = ctx.NewVal(Plain(kept));
  ctx.AddStep(absl::StrCat("reduce_mean ", n.name), pd, dnnl::reduction(pd),
              {{DNNL_ARG_SRC, ctx.Ref(src)}, {DNNL_ARG_DST, ctx.Ref(dst)}});
  ctx.Define(f.output, Val{dst.buffer, Plain(y)});
  return absl::OkStatus();
}

absl::StatusOr<Shape> InferReduceShape(const Node& n, const ShapeContext& ctx) {
  ASSIGN_OR_RETURN(Shape x, ctx.InputShape(n, 0));
  ASSIGN_OR_RETURN(std::vector<int64_t> axes, AxesOf(n, ctx, 1));
  const bool keep = n.IntAttr("keepdims", 1) != 0;
  std::vector<bool> red(x.size(), axes.empty());
  for (int64_t a : axes) {
    ASSIGN_OR_RETURN(int64_t k, NormAxis(n, a, x.size()));
    red[k] = true;
  }
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
