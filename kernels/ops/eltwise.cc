// Activation lowerings (Relu, Clip, Sigmoid, HardSwish, Pow...): the oneDNN eltwise
// chain post_op_fusion.h's ActivationOf gives, one primitive each.
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

absl::Status LowerActivation(const FusedNode& f, LoweringContext& ctx) {
  ASSIGN_OR_RETURN(auto acts, ActivationOf(f.node, ctx.graph()));
  ASSIGN_OR_RETURN(Val v, ctx.Get(f.node.inputs[0]));
  for (const auto& a : acts) {
    ASSIGN_OR_RETURN(v, ctx.Eltwise(f.node.name, v, a));
  }
  ctx.Define(f.output, v);
  return absl::OkStatus();
}

// Element-wise activations keep their input's shape; constant operands must be constant.
absl::StatusOr<Shape> InferActivationShape(const Node& n, const ShapeContext& ctx) {
  ASSIGN_OR_RETURN(Shape x, ctx.InputShape(n, 0));
  if (n.op == "Clip") {
    for (int i = 1; i <= 2; ++i) {
      if (i < static_cast<int>(n.inputs.size()) && !n.inputs[i].empty() && !ctx.Const(n, i)) {
        return NodeError(n, "min/max must be constants");
      }
    }
  }
  if (n.op == "Pow") {
    const ConstTensor* e = ctx.Const(n, 1);
    if (!e || e->size() != 1) return NodeError(n, "exponent must be a scalar constant");
  }
  return x;
}

}  // namespace normserve
