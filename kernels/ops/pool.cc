// MaxPool/AveragePool (ONNX ceil_mode via extended right padding) and their global
// forms: oneDNN pooling.
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/lowering_context.h"
#include "kernels/shape_inference.h"
#include "kernels/status_macros.h"

namespace normserve {
absl::Status LowerPool(const FusedNode& f, LoweringContext& ctx) {
  const Node& n = f.node;
  const dims x = ctx.DimsOf(n.inputs[0]), y = ctx.DimsOf(n.outputs[0]);
  const bool global = n.op.rfind("Global", 0) == 0;
  const bool max = n.op == "MaxPool" || n.op == "GlobalMaxPool";
  dims kernel, strides = {1, 1}, dil = {0, 0}, pl = {0, 0}, pr = {0, 0};
  if (global) {
    kernel = {x[2], x[3]};
  } else {
    kernel = n.IntsAttr("kernel_shape");
    strides = n.IntsAttr("strides", {1, 1});
    auto d = n.IntsAttr("dilations", {1, 1});
    dil = {d[0] - 1, d[1] - 1};
    auto pads = n.IntsAttr("pads", {0, 0, 0, 0});
    pl = {pads[0], pads[1]};
    for (int i = 0; i < 2; ++i) {
      // ceil_mode: extend the right padding so oneDNN's floor formula yields ONNX's size.
      const int64_t eff = (kernel[i] - 1) * d[i] + 1;
      pr[i] =
          std::max<int64_t>(pads[i + 2], (y[2 + i] - 1) * strides[i] + eff - x[2 + i] - pads[i]);
    }
  }
  dnnl::algorithm alg = max ? dnnl::algorithm::pooling_max
                        : n.IntAttr("count_include_pad", 0)
                            ? dnnl::algorithm::pooling_avg_include_padding
                            : dnnl::algorithm::pooling_avg_exclude_padding;
  ASSIGN_OR_RETURN(Val src, ctx.Get(n.inputs[0]));
  using P = dnnl::pooling_v2_forward;
  // The destination keeps the source's element type (bf16 in, bf16 out).
  const md dst_any = WithType(Any(y), src.desc.data_type());
  P::primitive_desc pd(P::desc(dnnl::prop_kind::forward_inference, alg, src.desc, dst_any, strides,
                               kernel, dil, pl, pr),
                       ctx.Attr(), CpuEngine());
  Val dst = ctx.NewVal(pd.dst_desc());
  ctx.AddStep(absl::StrCat("pool ", n.name), pd, P(pd),
              {{DNNL_ARG_SRC, ctx.Ref(src)}, {DNNL_ARG_DST, ctx.Ref(dst)}});
  ctx.Define(f.output, dst);
  return absl::OkStatus();
}

absl::StatusOr<Shape> InferPoolShape(const Node& n, const ShapeContext& ctx) {
  ASSIGN_OR_RETURN(Shape x, ctx.InputShape(n, 0));
  if (n.op == "GlobalAveragePool" || n.op == "GlobalMaxPool") {
    if (x.size() < 3) return NodeError(n, "input rank must be at least 3");
    for (size_t i = 2; i < x.size(); ++i) x[i] = 1;
    return x;
  }
  if (x.size() != 4) return NodeError(n, "only 2-D pooling (4-D tensors) is supported");
  if (n.outputs.size() > 1 && !n.outputs[1].empty())
    return NodeError(n, "MaxPool indices output is not supported");
  auto k = n.IntsAttr("kernel_shape");
  if (k.size() != 2) return NodeError(n, "kernel_shape must have 2 values");
  ASSIGN_OR_RETURN(auto p, WindowOutputDims(n, x, k));
  return Shape{x[0], x[1], p[0], p[1]};
}

}  // namespace normserve
