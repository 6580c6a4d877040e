// Expand: numpy (bidirectional) broadcast of a runtime tensor to a constant shape, run
// as the index-map copy kernel (oneDNN 2.6 has no broadcast-copy primitive).
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/index_map_kernel.h"
#include "kernels/lowering_context.h"
#include "kernels/shape_inference.h"
#include "kernels/status_macros.h"
#include "kernels/tensor.h"

namespace normserve {

absl::StatusOr<Shape> InferExpandShape(const Node& n, const ShapeContext& ctx) {
  ASSIGN_OR_RETURN(Shape x, ctx.InputShape(n, 0));
  const ConstTensor* c = ctx.Const(n, 1);
  if (c == nullptr) return NodeError(n, "shape must be a constant");
  if (c->shape.size() != 1) return NodeError(n, "shape must be a 1-D tensor");
  Shape target;
  for (int64_t i = 0; i < c->size(); ++i) {
    const int64_t d = c->AsInt(i);
    if (d < 0 || d > kMaxTensorElements) {
      return NodeError(n,
                       absl::StrCat("shape dim ", d, " is outside [0, ", kMaxTensorElements, "]"));
    }
    target.push_back(d);
  }
  if (target.size() > 8)
    return NodeError(n, absl::StrCat("shape has rank ", target.size(), "; at most 8"));
  auto s = BroadcastShapes(x, target);
  if (!s.ok()) return NodeError(n, std::string(s.status().message()));
  return *s;
}

absl::Status LowerExpand(const FusedNode& f, LoweringContext& ctx) {
  const Node& n = f.node;
  const dnnl::memory::dims y = ctx.DimsOf(n.outputs[0]);
  const dnnl::memory::dims x = PadRank(ctx.DimsOf(n.inputs[0]), y.size());
  if (y.empty())
    return absl::InvalidArgumentError("expanding a scalar to a scalar is not supported");
  ASSIGN_OR_RETURN(Val src, ctx.PlainVal(n.inputs[0]));
  if (x == y) {  // nothing to broadcast: the same data under the output's name
    ctx.Define(f.output, Val{src.buffer, Plain(y)});
    return absl::OkStatus();
  }
  for (int64_t d : y) {
    if (d == 0) return absl::InvalidArgumentError("expanding to an empty tensor is not supported");
  }
  auto copy = std::make_shared<IndexMapCopy>();
  copy->in_dims = x;
  for (size_t a = 0; a < y.size(); ++a) {
    std::vector<int64_t> m(y[a]);
    for (int64_t o = 0; o < y[a]; ++o) m[o] = x[a] == 1 ? 0 : o;
    copy->maps.push_back(std::move(m));
  }
  if (!AxisMapsAreValid(*copy)) return absl::InternalError("expand index maps out of range");
  Val dst = ctx.NewVal(Plain(y));
  const int src_ref = ctx.Ref(src), dst_ref = ctx.Ref(dst);
  PlanStep step;
  step.what = absl::StrCat("expand ", n.name, " [custom]");
  step.args = {{DNNL_ARG_SRC, src_ref}, {DNNL_ARG_DST, dst_ref}};
  step.custom = [copy, src_ref, dst_ref](const std::vector<dnnl::memory>& mems, BnObservations*) {
    RunIndexMapCopy(*copy, static_cast<const float*>(mems[src_ref].get_data_handle()),
                    static_cast<float*>(mems[dst_ref].get_data_handle()));
  };
  ctx.AddCustomStep(std::move(step));
  ctx.Define(f.output, dst);
  return absl::OkStatus();
}

}  // namespace normserve
