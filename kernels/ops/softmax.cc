// Softmax lowering (opset < 13 normalizes the flattened 2-D view).
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/lowering_context.h"
#include "kernels/status_macros.h"

namespace normserve {
absl::Status LowerSoftmax(const FusedNode& f, LoweringContext& ctx) {
  const Node& n = f.node;
  const dims x = ctx.DimsOf(n.inputs[0]);
  int64_t axis = n.IntAttr("axis", -1);
  if (axis < 0) axis += x.size();
  ASSIGN_OR_RETURN(Val src, ctx.PlainVal(n.inputs[0]));
  md view = src.desc;
  int soft_axis = static_cast<int>(axis);
  if (ctx.opset() < 13) {
    // Opset < 13 softmax normalizes the flattened [prod(:axis), prod(axis:)] matrix.
    int64_t a = 1, b = 1;
    for (int64_t i = 0; i < static_cast<int64_t>(x.size()); ++i) (i < axis ? a : b) *= x[i];
    view = Plain({a, b});
    soft_axis = 1;
  }
  using SM = dnnl::softmax_forward;
  SM::primitive_desc pd(SM::desc(dnnl::prop_kind::forward_inference, view, soft_axis), ctx.Attr(),
                        CpuEngine());
  Val dst = ctx.NewVal(view);
  ctx.AddStep(absl::StrCat("softmax ", n.name), pd, SM(pd),
              {{DNNL_ARG_SRC, ctx.Ref(Val{src.buffer, view})}, {DNNL_ARG_DST, ctx.Ref(dst)}});
  ctx.Define(f.output, Val{dst.buffer, Plain(x)});
  return absl::OkStatus();
}

}  // namespace normserve
