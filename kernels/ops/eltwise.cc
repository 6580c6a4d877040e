// Activation lowerings (Relu, Clip, Sigmoid, HardSwish, Pow, Neg, Reciprocal, Gelu...): the
// oneDNN eltwise chain post_op_fusion.h's ActivationOf gives, one primitive each; and Erf,
// which oneDNN 2.6 has only inside eltwise_gelu_erf, as a custom step.
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/lowering_context.h"
#include "kernels/shape_inference.h"
#include "kernels/status_macros.h"

namespace normserve {
absl::Status LowerActivation(const FusedNode& f, LoweringContext& ctx) {
  ASSIGN_OR_RETURN(auto acts, ActivationOf(f.node, ctx.graph()));
  ASSIGN_OR_RETURN(Val v, ctx.Get(f.node.inputs[0]));
  for (const auto& a : acts) {
    ASSIGN_OR_RETURN(v, ctx.Eltwise(f.node.name, v, a));
  }
  ctx.Define(f.output, v);
  return absl::OkStatus();
}

// Erf on its own (a GELU that gelu_fusion.h did not recognise): std::erf over every element
// of the buffer, in the layout the producer chose but in f32 (a bf16 value is converted).
// A blocked layout's padding holds zeros, and erf(0) = 0 keeps it so.
absl::Status LowerErf(const FusedNode& f, LoweringContext& ctx) {
  const Node& n = f.node;
  ASSIGN_OR_RETURN(Val produced, ctx.Get(n.inputs[0]));
  ASSIGN_OR_RETURN(Val src, ctx.InLayout(n.inputs[0], AsF32(produced.desc)));
  Val dst = ctx.NewVal(src.desc);
  const int src_ref = ctx.Ref(src), dst_ref = ctx.Ref(dst);
  const size_t count = src.desc.get_size() / sizeof(float);
  PlanStep step;
  step.what = absl::StrCat("erf ", n.name, " [custom]");
  step.args = {{DNNL_ARG_SRC, src_ref}, {DNNL_ARG_DST, dst_ref}};
  step.custom = [src_ref, dst_ref, count](const std::vector<dnnl::memory>& mems, BnObservations*) {
    const float* x = static_cast<const float*>(mems[src_ref].get_data_handle());
    float* y = static_cast<float*>(mems[dst_ref].get_data_handle());
    for (size_t i = 0; i < count; ++i) y[i] = std::erf(x[i]);
  };
  ctx.AddCustomStep(std::move(step));
  ctx.Define(f.output, dst);
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
  if (n.op == "Gelu") {
    const std::string approximate = n.StringAttr("approximate", "none");
    if (approximate != "none" && approximate != "tanh") {
      return NodeError(n, absl::StrCat("approximate \"", approximate.substr(0, 32),
                                       "\" is not supported (none, tanh)"));
    }
  }
  return x;
}

}  // namespace normserve
