// Transpose lowering: one reorder through a permuted view of the plain input.
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/lowering_context.h"
#include "kernels/shape_inference.h"
#include "kernels/status_macros.h"

namespace normserve {
absl::Status LowerTranspose(const FusedNode& f, LoweringContext& ctx) {
  const Node& n = f.node;
  const dims x = ctx.DimsOf(n.inputs[0]), y = ctx.DimsOf(n.outputs[0]);
  std::vector<int64_t> perm = n.IntsAttr("perm");
  if (perm.empty()) {
    for (int64_t i = x.size() - 1; i >= 0; --i) perm.push_back(i);
  }
  // permute_axes wants, for each input axis, its position in the output.
  std::vector<int> where(x.size());
  for (size_t j = 0; j < perm.size(); ++j)
    where[perm[j] < 0 ? perm[j] + x.size() : perm[j]] = static_cast<int>(j);
  // A reorder moves any element type: the producer's is kept.
  ASSIGN_OR_RETURN(Val produced, ctx.Get(n.inputs[0]));
  const dt type = produced.desc.data_type();
  ASSIGN_OR_RETURN(Val src, ctx.InLayout(n.inputs[0], WithType(Plain(x), type)));
  const md permuted = src.desc.permute_axes(where);
  Val dst = ctx.NewVal(WithType(Plain(y), type));
  RETURN_IF_ERROR(ctx.AddReorder(ctx.Ref(Val{src.buffer, permuted}), dst, n.name));
  ctx.Define(f.output, dst);
  return absl::OkStatus();
}

absl::StatusOr<Shape> InferTransposeShape(const Node& n, const ShapeContext& ctx) {
  ASSIGN_OR_RETURN(Shape x, ctx.InputShape(n, 0));
  std::vector<int64_t> perm = n.IntsAttr("perm");
  if (perm.empty()) {
    for (int64_t i = x.size() - 1; i >= 0; --i) perm.push_back(i);
  }
  if (perm.size() != x.size()) return NodeError(n, "perm length does not match rank");
  Shape s;
  for (int64_t p : perm) {
    ASSIGN_OR_RETURN(int64_t k, NormAxis(n, p, x.size()));
    s.push_back(x[k]);
  }
  return s;
}

}  // namespace normserve
