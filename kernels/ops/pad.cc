// Pad: constant (any value), reflect and edge modes, on any axes, as one custom kernel
// (index_map_kernel.h); a zero Pad in front of a Conv or AveragePool is folded into its
// padding before lowering (pad_folding.h) and never reaches this file.
#include "kernels/ops/pad.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/index_map_kernel.h"
#include "kernels/lowering_context.h"
#include "kernels/shape_inference.h"
#include "kernels/status_macros.h"
#include "kernels/tensor.h"

namespace normserve {
namespace {

// At most this many pads are echoed in an error.
constexpr size_t kEchoedPads = 12;

std::string PadsText(const std::vector<int64_t>& pads) {
  if (pads.size() <= kEchoedPads) return absl::StrCat("[", absl::StrJoin(pads, ","), "]");
  return absl::StrCat("[", absl::StrJoin(pads.begin(), pads.begin() + kEchoedPads, ","), ",...]");
}

// Output index -> input index along one axis of size n padded by (b, e); -1 is the fill.
std::vector<int64_t> AxisMap(int64_t n, int64_t b, int64_t e, PadSpec::Mode mode) {
  std::vector<int64_t> m(n + b + e);
  for (int64_t o = 0; o < static_cast<int64_t>(m.size()); ++o) {
    int64_t i = o - b;
    if (i < 0 || i >= n) {
      switch (mode) {
        case PadSpec::Mode::kConstant:
          i = -1;
          break;
        case PadSpec::Mode::kEdge:
          i = i < 0 ? 0 : n - 1;
          break;
        // One reflection suffices: ReadPadSpec and InferPadShape keep pads below n.
        case PadSpec::Mode::kReflect:
          i = i < 0 ? -i : 2 * (n - 1) - i;
          break;
      }
    }
    m[o] = i;
  }
  return m;
}

}  // namespace

absl::StatusOr<PadSpec> ReadPadSpec(const Node& n, const ShapeContext& ctx, size_t rank) {
  PadSpec spec;
  const std::string mode = n.StringAttr("mode", "constant");
  if (mode == "constant")
    spec.mode = PadSpec::Mode::kConstant;
  else if (mode == "reflect")
    spec.mode = PadSpec::Mode::kReflect;
  else if (mode == "edge")
    spec.mode = PadSpec::Mode::kEdge;
  else
    return NodeError(n, absl::StrCat("mode \"", mode.substr(0, 16),
                                     "\" is not supported (constant, reflect, edge)"));

  std::vector<int64_t> pads;
  if (n.HasAttr("pads")) {  // opset < 11
    pads = n.IntsAttr("pads");
    spec.value = n.FloatAttr("value", 0.f);
  } else {
    const ConstTensor* p = ctx.Const(n, 1);
    if (p == nullptr) return NodeError(n, "pads must be a constant");
    for (int64_t i = 0; i < p->size(); ++i) pads.push_back(p->AsInt(i));
    if (n.inputs.size() > 2 && !n.inputs[2].empty()) {
      const ConstTensor* v = ctx.Const(n, 2);
      if (v == nullptr) return NodeError(n, "constant_value must be a constant");
      if (v->size() != 1)
        return NodeError(n,
                         absl::StrCat("constant_value has ", v->size(), " elements; expected 1"));
      spec.value = static_cast<float>(v->AsDouble(0));
    }
  }
  // Opset 18 axes: the pads apply to these axes only, in this order.
  std::vector<int64_t> axes;
  if (n.inputs.size() > 3 && !n.inputs[3].empty()) {
    const ConstTensor* a = ctx.Const(n, 3);
    if (a == nullptr) return NodeError(n, "axes must be a constant");
    for (int64_t i = 0; i < a->size(); ++i) {
      ASSIGN_OR_RETURN(int64_t k, NormAxis(n, a->AsInt(i), rank));
      axes.push_back(k);
    }
  } else {
    for (size_t i = 0; i < rank; ++i) axes.push_back(static_cast<int64_t>(i));
  }
  if (pads.size() != 2 * axes.size()) {
    return NodeError(
        n, absl::StrCat("pads ", PadsText(pads), " have ", pads.size(), " values; expected ",
                        2 * axes.size(), " for ", axes.size(), " axes"));
  }
  for (int64_t p : pads) {
    if (p < -kMaxWindowGeometry || p > kMaxWindowGeometry) {
      return NodeError(n, absl::StrCat("pads ", PadsText(pads), ": pad ", p, " is outside [",
                                       -kMaxWindowGeometry, ", ", kMaxWindowGeometry, "]"));
    }
  }
  spec.begin.assign(rank, 0);
  spec.end.assign(rank, 0);
  std::vector<bool> seen(rank, false);
  for (size_t i = 0; i < axes.size(); ++i) {
    if (seen[axes[i]])
      return NodeError(n, absl::StrCat("axis ", axes[i], " is listed twice in axes"));
    seen[axes[i]] = true;
    spec.begin[axes[i]] = pads[i];
    spec.end[axes[i]] = pads[i + axes.size()];
  }
  return spec;
}

absl::StatusOr<Shape> InferPadShape(const Node& n, const ShapeContext& ctx) {
  ASSIGN_OR_RETURN(Shape x, ctx.InputShape(n, 0));
  if (x.empty()) return NodeError(n, "a scalar input cannot be padded");
  ASSIGN_OR_RETURN(PadSpec spec, ReadPadSpec(n, ctx, x.size()));
  Shape y(x.size());
  for (size_t a = 0; a < x.size(); ++a) {
    const int64_t b = spec.begin[a], e = spec.end[a];
    // Bounded operands: |b|, |e| <= kMaxWindowGeometry, x[a] <= kMaxTensorElements.
    y[a] = x[a] + b + e;
    const std::string pads =
        absl::StrCat("pads (", b, ", ", e, ") on axis ", a, " of input ", ShapeToString(x));
    if (y[a] < 1) return NodeError(n, absl::StrCat(pads, " leave no elements"));
    if (spec.mode == PadSpec::Mode::kReflect && (b >= x[a] || e >= x[a])) {
      return NodeError(n, absl::StrCat(pads, ": reflect pads must be smaller than the dim"));
    }
    if (spec.mode != PadSpec::Mode::kConstant && x[a] == 0 && (b > 0 || e > 0)) {
      return NodeError(n, absl::StrCat(pads, ": an empty axis has nothing to repeat"));
    }
  }
  return y;
}

absl::Status LowerPad(const FusedNode& f, LoweringContext& ctx) {
  const Node& n = f.node;
  const dims x = ctx.DimsOf(n.inputs[0]), y = ctx.DimsOf(n.outputs[0]);
  const ShapeContext shapes(ctx.graph());
  ASSIGN_OR_RETURN(PadSpec spec, ReadPadSpec(n, shapes, x.size()));
  auto copy = std::make_shared<IndexMapCopy>();
  copy->in_dims = x;
  copy->fill = spec.value;
  for (size_t a = 0; a < x.size(); ++a)
    copy->maps.push_back(AxisMap(x[a], spec.begin[a], spec.end[a], spec.mode));
  if (!AxisMapsAreValid(*copy)) return absl::InternalError("pad index maps out of range");
  ASSIGN_OR_RETURN(Val src, ctx.PlainVal(n.inputs[0]));
  Val dst = ctx.NewVal(Plain(y));
  const int src_ref = ctx.Ref(src), dst_ref = ctx.Ref(dst);
  PlanStep step;
  step.what = absl::StrCat("pad ", n.name, " ", n.StringAttr("mode", "constant"), " [custom]");
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
