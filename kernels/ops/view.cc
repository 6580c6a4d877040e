// Lowerings that move no data: reshaping views and identities.
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/lowering_context.h"
#include "kernels/shape_inference.h"
#include "kernels/status_macros.h"

namespace normserve {
// Flatten/Reshape/Squeeze/Unsqueeze: a plain view of the input's buffer with the output's
// dims (no copy), in the element type its producer wrote.
absl::Status LowerView(const FusedNode& f, LoweringContext& ctx) {
  const std::string& in = f.node.inputs[0];
  ASSIGN_OR_RETURN(Val produced, ctx.Get(in));
  const dt type = produced.desc.data_type();
  ASSIGN_OR_RETURN(Val src, ctx.InLayout(in, WithType(Plain(ctx.DimsOf(in)), type)));
  ctx.Define(f.output, Val{src.buffer, WithType(Plain(ctx.DimsOf(f.node.outputs[0])), type)});
  return absl::OkStatus();
}

// Identity and inference-mode Dropout: the output names the input's buffer.
absl::Status LowerIdentity(const FusedNode& f, LoweringContext& ctx) {
  ASSIGN_OR_RETURN(Val v, ctx.Get(f.node.inputs[0]));
  ctx.Define(f.output, v);
  return absl::OkStatus();
}

absl::StatusOr<Shape> InferViewShape(const Node& n, const ShapeContext& ctx) {
  ASSIGN_OR_RETURN(Shape x, ctx.InputShape(n, 0));
  return ViewShape(n, ctx, x);
}

absl::StatusOr<Shape> InferDropoutShape(const Node& n, const ShapeContext& ctx) {
  if (n.outputs.size() > 1 && !n.outputs[1].empty())
    return NodeError(n, "mask output is not supported");
  return ctx.InputShape(n, 0);
}

}  // namespace normserve
