// Slice and Split on runtime tensors: each output is a strided view of the plain input
// (a oneDNN memory descriptor with the slice's strides and offset). A view that is the
// dense start of the input is used in place; any other is copied by one oneDNN reorder
// into a dense buffer, so consumers always see a plain tensor. Negative steps gather
// through the index-map kernel.
#include <algorithm>
#include <climits>
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
namespace {

// The part of the input one output reads: per axis, first index, count and step.
struct Region {
  dims start, count, step;
};

// Row-major element strides of `d`.
dims PlainStrides(const dims& d) {
  dims s(d.size(), 1);
  for (size_t a = d.size(); a > 1; --a) s[a - 2] = s[a - 1] * d[a - 1];
  return s;
}

absl::StatusOr<std::vector<int64_t>> IntsInput(const Node& n, const ShapeContext& ctx, int i,
                                               const char* what) {
  const ConstTensor* c = ctx.Const(n, i);
  if (c == nullptr) return NodeError(n, absl::StrCat(what, " must be a constant"));
  std::vector<int64_t> v;
  for (int64_t k = 0; k < c->size(); ++k) v.push_back(c->AsInt(k));
  return v;
}

bool HasInput(const Node& n, size_t i) { return n.inputs.size() > i && !n.inputs[i].empty(); }

// ONNX Slice (attribute form before opset 10, inputs after) on an input of shape x.
absl::StatusOr<Region> SliceRegion(const Node& n, const ShapeContext& ctx, const Shape& x) {
  std::vector<int64_t> starts, ends, axes, steps;
  if (n.HasAttr("starts")) {
    starts = n.IntsAttr("starts");
    ends = n.IntsAttr("ends");
    axes = n.IntsAttr("axes");
  } else {
    ASSIGN_OR_RETURN(starts, IntsInput(n, ctx, 1, "starts"));
    ASSIGN_OR_RETURN(ends, IntsInput(n, ctx, 2, "ends"));
    if (HasInput(n, 3)) {
      ASSIGN_OR_RETURN(axes, IntsInput(n, ctx, 3, "axes"));
    }
    if (HasInput(n, 4)) {
      ASSIGN_OR_RETURN(steps, IntsInput(n, ctx, 4, "steps"));
    }
  }
  if (axes.empty()) {
    for (size_t a = 0; a < starts.size() && a < x.size(); ++a)
      axes.push_back(static_cast<int64_t>(a));
  }
  if (steps.empty()) steps.assign(starts.size(), 1);
  if (ends.size() != starts.size() || axes.size() != starts.size() ||
      steps.size() != starts.size()) {
    return NodeError(
        n, absl::StrCat("starts, ends, axes and steps have ", starts.size(), ", ", ends.size(),
                        ", ", axes.size(), " and ", steps.size(), " values; they must be equal"));
  }
  Region r;
  r.start.assign(x.size(), 0);
  r.count = x;
  r.step.assign(x.size(), 1);
  std::vector<bool> seen(x.size(), false);
  for (size_t i = 0; i < starts.size(); ++i) {
    ASSIGN_OR_RETURN(int64_t a, NormAxis(n, axes[i], x.size()));
    if (seen[a]) return NodeError(n, absl::StrCat("axis ", a, " is sliced twice"));
    seen[a] = true;
    const int64_t dim = x[a], step = steps[i];
    if (step == 0) return NodeError(n, absl::StrCat("step 0 on axis ", a, " is not allowed"));
    // ONNX clamping; dim >= 0, so adding it to a negative index cannot overflow.
    int64_t start = starts[i], end = ends[i];
    if (start < 0) start += dim;
    if (end < 0) end += dim;
    if (step > 0) {
      start = std::clamp<int64_t>(start, 0, dim);
      end = std::clamp<int64_t>(end, 0, dim);
    } else {
      start = std::clamp<int64_t>(start, 0, dim - 1);
      end = std::clamp<int64_t>(end, -1, dim - 1);
    }
    if (step > 0 ? end <= start : start <= end) {
      return NodeError(
          n, absl::StrCat("slice from ", starts[i], " to ", ends[i], " by ", step, " of axis ", a,
                          " (size ", dim, ") is empty; empty tensors are not supported"));
    }
    const int64_t span = step > 0 ? end - start : start - end;
    const int64_t stride = step > 0 ? step : (step == INT64_MIN ? INT64_MAX : -step);
    r.start[a] = start;
    r.count[a] = (span - 1) / stride + 1;
    r.step[a] = step;
  }
  return r;
}

// Split sizes along `axis` (attribute before opset 13, input after, or num_outputs / the
// output count for equal parts).
absl::StatusOr<std::vector<int64_t>> SplitSizes(const Node& n, const ShapeContext& ctx,
                                                int64_t dim) {
  std::vector<int64_t> sizes;
  if (n.HasAttr("split")) {
    sizes = n.IntsAttr("split");
  } else if (HasInput(n, 1)) {
    ASSIGN_OR_RETURN(sizes, IntsInput(n, ctx, 1, "split"));
  } else {
    const int64_t parts = n.HasAttr("num_outputs") ? n.IntAttr("num_outputs", 1)
                                                   : static_cast<int64_t>(n.outputs.size());
    if (parts < 1 || parts > dim) {
      return NodeError(n, absl::StrCat("cannot split a dim of ", dim, " into ", parts, " parts"));
    }
    if (!n.HasAttr("num_outputs") && dim % parts != 0) {
      return NodeError(
          n, absl::StrCat("cannot split a dim of ", dim, " into ", parts, " equal parts"));
    }
    // Opset 18 rule: ceil(dim / parts) each, the last one smaller.
    const int64_t chunk = (dim + parts - 1) / parts;
    for (int64_t k = 0; k < parts; ++k) sizes.push_back(std::min(chunk, dim - k * chunk));
  }
  if (sizes.size() != n.outputs.size()) {
    return NodeError(n,
                     absl::StrCat(sizes.size(), " split sizes for ", n.outputs.size(), " outputs"));
  }
  int64_t sum = 0;
  for (int64_t s : sizes) {
    if (s < 1 || s > dim) {
      return NodeError(
          n, absl::StrCat("split size ", s, " is outside [1, ", dim, "] (the dim split)"));
    }
    sum += s;  // at most outputs * dim, far from overflow for a bounded dim and node
  }
  if (sum != dim)
    return NodeError(n, absl::StrCat("split sizes add up to ", sum, "; the dim is ", dim));
  return sizes;
}

absl::StatusOr<std::vector<Region>> SplitRegions(const Node& n, const ShapeContext& ctx,
                                                 const Shape& x) {
  ASSIGN_OR_RETURN(int64_t axis, NormAxis(n, n.IntAttr("axis", 0), x.size()));
  ASSIGN_OR_RETURN(std::vector<int64_t> sizes, SplitSizes(n, ctx, x[axis]));
  std::vector<Region> regions;
  int64_t offset = 0;
  for (int64_t s : sizes) {
    Region r{dims(x.size(), 0), x, dims(x.size(), 1)};
    r.start[axis] = offset;
    r.count[axis] = s;
    offset += s;
    regions.push_back(std::move(r));
  }
  return regions;
}

bool HasNegativeStep(const Region& r) {
  for (int64_t s : r.step) {
    if (s < 0) return true;
  }
  return false;
}

// A region read backwards along some axis (torch.flip's export): oneDNN descriptors
// cannot hold negative strides, so the index-map kernel gathers it.
absl::Status DefineReversed(const std::string& name, const Val& src, const dims& x, const Region& r,
                            const std::string& what, LoweringContext& ctx) {
  auto copy = std::make_shared<IndexMapCopy>();
  copy->in_dims = x;
  for (size_t a = 0; a < x.size(); ++a) {
    std::vector<int64_t> m(r.count[a]);
    // start + k * step stays within [0, dim): the count was derived from the clamped range.
    for (int64_t k = 0; k < r.count[a]; ++k) m[k] = r.start[a] + k * r.step[a];
    copy->maps.push_back(std::move(m));
  }
  if (!AxisMapsAreValid(*copy)) return absl::InternalError("slice index maps out of range");
  Val dst = ctx.NewVal(Plain(r.count));
  const int src_ref = ctx.Ref(src), dst_ref = ctx.Ref(dst);
  PlanStep step;
  step.what = absl::StrCat("slice ", what, " [custom:reversed]");
  step.args = {{DNNL_ARG_SRC, src_ref}, {DNNL_ARG_DST, dst_ref}};
  step.custom = [copy, src_ref, dst_ref](const std::vector<dnnl::memory>& mems, BnObservations*) {
    RunIndexMapCopy(*copy, static_cast<const float*>(mems[src_ref].get_data_handle()),
                    static_cast<float*>(mems[dst_ref].get_data_handle()));
  };
  ctx.AddCustomStep(std::move(step));
  ctx.Define(name, dst);
  return absl::OkStatus();
}

// Defines `name` as region `r` of the plain value `src` of shape x.
absl::Status DefineRegion(const std::string& name, const Val& src, const dims& x, const Region& r,
                          const std::string& what, LoweringContext& ctx) {
  if (HasNegativeStep(r)) return DefineReversed(name, src, x, r, what, ctx);
  const dims in_strides = PlainStrides(x), out_strides = PlainStrides(r.count);
  dims strides(x.size());
  int64_t offset = 0;
  for (size_t a = 0; a < x.size(); ++a) {
    offset += r.start[a] * in_strides[a];
    // A size-1 axis is never stepped along: give it the dense stride so that a dense
    // region compares equal to the plain layout.
    strides[a] = r.count[a] == 1 ? out_strides[a] : in_strides[a] * r.step[a];
  }
  const md plain = Plain(r.count);
  if (offset == 0 && strides == PlainStrides(r.count)) {
    ctx.Define(name, Val{src.buffer, plain});
    return absl::OkStatus();
  }
  // Written into the descriptor directly: oneDNN's strides constructor refuses strides
  // that interleave (a step of 3 along W of 13 columns reaches past the next row's start),
  // which its reorders read correctly.
  md view = plain;
  for (size_t a = 0; a < x.size(); ++a) view.data.format_desc.blocking.strides[a] = strides[a];
  view.data.offset0 = offset;
  Val dst = ctx.NewVal(plain);
  RETURN_IF_ERROR(ctx.AddReorder(ctx.Ref(Val{src.buffer, view}), dst, what));
  ctx.Define(name, dst);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Shape> InferSliceShape(const Node& n, const ShapeContext& ctx) {
  ASSIGN_OR_RETURN(Shape x, ctx.InputShape(n, 0));
  ASSIGN_OR_RETURN(Region r, SliceRegion(n, ctx, x));
  return r.count;
}

absl::StatusOr<std::vector<Shape>> InferSplitShapes(const Node& n, const ShapeContext& ctx) {
  ASSIGN_OR_RETURN(Shape x, ctx.InputShape(n, 0));
  for (const std::string& o : n.outputs) {
    if (o.empty()) return NodeError(n, "omitted outputs are not supported");
  }
  ASSIGN_OR_RETURN(std::vector<Region> regions, SplitRegions(n, ctx, x));
  std::vector<Shape> shapes;
  for (const Region& r : regions) shapes.push_back(r.count);
  return shapes;
}

absl::StatusOr<Shape> InferSplitShape(const Node& n, const ShapeContext& ctx) {
  ASSIGN_OR_RETURN(std::vector<Shape> shapes, InferSplitShapes(n, ctx));
  return shapes[0];
}

absl::Status LowerSlice(const FusedNode& f, LoweringContext& ctx) {
  const Node& n = f.node;
  const dims x = ctx.DimsOf(n.inputs[0]);
  ASSIGN_OR_RETURN(Region r, SliceRegion(n, ShapeContext(ctx.graph()), x));
  ASSIGN_OR_RETURN(Val src, ctx.PlainVal(n.inputs[0]));
  return DefineRegion(f.output, src, x, r, n.name, ctx);
}

absl::Status LowerSplit(const FusedNode& f, LoweringContext& ctx) {
  const Node& n = f.node;
  const dims x = ctx.DimsOf(n.inputs[0]);
  ASSIGN_OR_RETURN(std::vector<Region> regions, SplitRegions(n, ShapeContext(ctx.graph()), x));
  ASSIGN_OR_RETURN(Val src, ctx.PlainVal(n.inputs[0]));
  for (size_t k = 0; k < regions.size(); ++k) {
    RETURN_IF_ERROR(
        DefineRegion(n.outputs[k], src, x, regions[k], absl::StrCat(n.name, " output ", k), ctx));
  }
  return absl::OkStatus();
}

}  // namespace normserve
