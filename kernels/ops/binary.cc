// Add/Sub/Mul/Div lowering: oneDNN binary with numpy broadcasting of the second
// operand.
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/lowering_context.h"
#include "kernels/status_macros.h"

namespace normserve {
namespace {

using md = dnnl::memory::desc;
using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;
using dims = dnnl::memory::dims;

}  // namespace

absl::Status LowerBinary(const FusedNode& f, LoweringContext& ctx) {
  const Node& n = f.node;
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
    ASSIGN_OR_RETURN(av, ctx.PlainVal(a));
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
      absl::StrCat("binary ", n.name, PostOpsText(f)), pd, dnnl::binary(pd),
      {{DNNL_ARG_SRC_0, ctx.Ref(av)}, {DNNL_ARG_SRC_1, bref}, {DNNL_ARG_DST, ctx.Ref(dst)}});
  ctx.Define(f.output, dst);
  return absl::OkStatus();
}

}  // namespace normserve
