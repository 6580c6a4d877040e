// Add/Sub/Mul/Div and n-ary Min/Max lowering: oneDNN binary with numpy broadcasting of
// the second operand (Min/Max with k operands: k-1 binaries into one accumulator).
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/lowering_context.h"
#include "kernels/shape_inference.h"
#include "kernels/status_macros.h"

namespace normserve {
namespace {

// One binary step dst = alg(a, b) + post, where `av` has the output shape `y` and `b` is
// a runtime or constant value broadcastable to it. `plain_a` gives `av` in the plain
// layout, for when oneDNN cannot pair a's layout with a plain broadcast operand.
absl::StatusOr<Val> BinaryStep(LoweringContext& ctx, const std::string& what, dnnl::algorithm alg,
                               Val av, const std::function<absl::StatusOr<Val>()>& plain_a,
                               const std::string& b, const dims& y,
                               const std::vector<PostOp>& post) {
  const dims bd = PadRank(ctx.DimsOf(b), y.size());
  auto make = [&](const md& src0, const md& src1) {
    dnnl::binary::desc desc(alg, src0, src1, src0);
    return dnnl::binary::primitive_desc(desc, ctx.Attr(post), CpuEngine());
  };
  // Same-shape runtime operands share the first one's layout; broadcast ones are plain.
  md bmd = (!ctx.IsConst(b) && bd == y) ? av.desc : Plain(bd);
  dnnl::binary::primitive_desc pd;
  try {
    pd = make(av.desc, bmd);
  } catch (const dnnl::error&) {
    ASSIGN_OR_RETURN(av, plain_a());
    bmd = Plain(bd);
    pd = make(av.desc, bmd);
  }
  int bref;
  if (ctx.IsConst(b)) {
    bref = ctx.ConstPlain(Floats(ctx.ConstOf(b)), bd);
  } else if (bmd == av.desc) {
    ASSIGN_OR_RETURN(Val bv, ctx.InLayout(b, bmd));
    bref = ctx.Ref(bv);
  } else {
    ASSIGN_OR_RETURN(Val bv, ctx.PlainVal(b));
    bref = ctx.Ref(Val{bv.buffer, bmd});
  }
  Val dst = ctx.NewVal(pd.dst_desc());
  ctx.AddStep(
      what, pd, dnnl::binary(pd),
      {{DNNL_ARG_SRC_0, ctx.Ref(av)}, {DNNL_ARG_SRC_1, bref}, {DNNL_ARG_DST, ctx.Ref(dst)}});
  return dst;
}

// Min/Max: a runtime operand with the output shape is the accumulator, every other
// operand is folded into it by one binary (both operations are commutative).
absl::Status LowerMinMax(const FusedNode& f, LoweringContext& ctx) {
  const Node& n = f.node;
  const dims y = ctx.DimsOf(n.outputs[0]);
  const dnnl::algorithm alg =
      n.op == "Min" ? dnnl::algorithm::binary_min : dnnl::algorithm::binary_max;
  int acc = -1;
  for (size_t i = 0; i < n.inputs.size() && acc < 0; ++i) {
    if (!ctx.IsConst(n.inputs[i]) && ctx.DimsOf(n.inputs[i]) == y) acc = static_cast<int>(i);
  }
  if (acc < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("no runtime operand has the output shape ", ShapeToString(y),
                     " (broadcasting every operand is not supported)"));
  }
  const std::string& first = n.inputs[acc];
  ASSIGN_OR_RETURN(Val v, ctx.Get(first));
  bool named = true;  // v is still the value `first` (its plain copy can be shared)
  const size_t steps = n.inputs.size() - 1;
  size_t done = 0;
  for (size_t i = 0; i < n.inputs.size(); ++i) {
    if (static_cast<int>(i) == acc) continue;
    ++done;
    const Val cur = v;
    auto plain = [&ctx, &first, &y, named, cur, &n]() -> absl::StatusOr<Val> {
      if (named) return ctx.PlainVal(first);
      Val p = ctx.NewVal(Plain(y));
      RETURN_IF_ERROR(ctx.AddReorder(ctx.Ref(cur), p, absl::StrCat("reorder ", n.name)));
      return p;
    };
    ASSIGN_OR_RETURN(
        v,
        BinaryStep(ctx, absl::StrCat("binary ", n.name, done == steps ? PostOpsText(f) : ""), alg,
                   cur, plain, n.inputs[i], y, done == steps ? f.post_ops : std::vector<PostOp>{}));
    named = false;
  }
  ctx.Define(f.output, v);
  return absl::OkStatus();
}

}  // namespace

absl::Status LowerBinary(const FusedNode& f, LoweringContext& ctx) {
  const Node& n = f.node;
  if (n.op == "Min" || n.op == "Max") return LowerMinMax(f, ctx);
  std::string a = n.inputs[0], b = n.inputs[1];
  const dims y = ctx.DimsOf(n.outputs[0]);
  dnnl::algorithm alg = n.op == "Add"   ? dnnl::algorithm::binary_add
                        : n.op == "Sub" ? dnnl::algorithm::binary_sub
                        : n.op == "Mul" ? dnnl::algorithm::binary_mul
                                        : dnnl::algorithm::binary_div;
  std::vector<PostOp> post = f.post_ops;
  if (ctx.IsConst(a) || ctx.DimsOf(a) != y) {
    // oneDNN broadcasts src1 only: put the full-size operand first.
    std::swap(a, b);
    if (n.op == "Sub") {
      post.insert(post.begin(), PostOp{false, {dnnl::algorithm::eltwise_linear, -1.f, 0.f}});
    } else if (n.op == "Div") {
      return absl::InvalidArgumentError("Div with a broadcast dividend is not supported");
    }
  }
  if (ctx.IsConst(a) || ctx.DimsOf(a) != y) {
    return absl::InvalidArgumentError(
        absl::StrCat("neither operand has the output shape ", ShapeToString(y)));
  }
  ASSIGN_OR_RETURN(Val av, ctx.Get(a));
  ASSIGN_OR_RETURN(Val dst, BinaryStep(
                                ctx, absl::StrCat("binary ", n.name, PostOpsText(f)), alg, av,
                                [&ctx, &a] { return ctx.PlainVal(a); }, b, y, post));
  ctx.Define(f.output, dst);
  return absl::OkStatus();
}

// Min/Max: numpy broadcasting over any number (>= 1) of operands.
absl::StatusOr<Shape> InferVariadicBroadcastShape(const Node& n, const ShapeContext& ctx) {
  if (n.inputs.empty()) return NodeError(n, "needs at least one input");
  ASSIGN_OR_RETURN(Shape s, ctx.InputShape(n, 0));
  for (size_t i = 1; i < n.inputs.size(); ++i) {
    ASSIGN_OR_RETURN(Shape x, ctx.InputShape(n, static_cast<int>(i)));
    auto b = BroadcastShapes(s, x);
    if (!b.ok()) return NodeError(n, std::string(b.status().message()));
    s = *b;
  }
  return s;
}

}  // namespace normserve
