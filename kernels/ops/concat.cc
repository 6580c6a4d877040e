// Concat lowering: oneDNN concat of plain inputs (bf16 in a bf16 plan).
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/lowering_context.h"
#include "kernels/shape_inference.h"
#include "kernels/status_macros.h"
#include "kernels/tensor.h"

namespace normserve {
absl::Status LowerConcat(const FusedNode& f, LoweringContext& ctx) {
  const Node& n = f.node;
  const dims y = ctx.DimsOf(n.outputs[0]);
  int64_t axis = n.IntAttr("axis", 0);
  if (axis < 0) axis += y.size();
  std::vector<md> srcs;
  std::vector<std::pair<int, int>> args;
  for (size_t i = 0; i < n.inputs.size(); ++i) {
    ASSIGN_OR_RETURN(Val v, ctx.InLayout(n.inputs[i], ctx.ActPlain(ctx.DimsOf(n.inputs[i]))));
    srcs.push_back(v.desc);
    args.push_back({DNNL_ARG_MULTIPLE_SRC + static_cast<int>(i), ctx.Ref(v)});
  }
  dnnl::concat::primitive_desc pd(ctx.ActPlain(y), static_cast<int>(axis), srcs, CpuEngine(),
                                  ctx.Attr());
  Val dst = ctx.NewVal(ctx.ActPlain(y));
  args.push_back({DNNL_ARG_DST, ctx.Ref(dst)});
  ctx.AddStep(absl::StrCat("concat ", n.name), pd, dnnl::concat(pd), std::move(args));
  ctx.Define(f.output, dst);
  return absl::OkStatus();
}

absl::StatusOr<Shape> InferConcatShape(const Node& n, const ShapeContext& ctx) {
  ASSIGN_OR_RETURN(Shape x, ctx.InputShape(n, 0));
  ASSIGN_OR_RETURN(int64_t axis, NormAxis(n, n.IntAttr("axis", 0), x.size()));
  Shape s = x;
  for (size_t i = 1; i < n.inputs.size(); ++i) {
    ASSIGN_OR_RETURN(Shape y, ctx.InputShape(n, i));
    if (y.size() != x.size()) return NodeError(n, "inputs have different ranks");
    for (size_t d = 0; d < x.size(); ++d) {
      if (static_cast<int64_t>(d) != axis && y[d] != x[d]) {
        return NodeError(n, absl::StrCat("input ", i, " shape ", ShapeToString(y),
                                         " does not match ", ShapeToString(x)));
      }
    }
    // Each addend is at most kMaxTensorElements: no overflow; the sum is checked after.
    s[axis] += y[axis];
  }
  return s;
}

}  // namespace normserve
