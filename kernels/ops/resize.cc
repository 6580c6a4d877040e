// Resize (opset 10-17) and Upsample (opset 7-9) of 4-D NCHW tensors along H and W, modes
// nearest and linear: oneDNN resampling where its coordinate convention is the node's,
// a custom separable kernel (index and weight tables built at compile time) otherwise.
#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/lowering_context.h"
#include "kernels/shape_inference.h"
#include "kernels/status_macros.h"

namespace normserve {
namespace {

// Everything a Resize/Upsample node means for one concrete input shape.
struct ResizeSpec {
  bool linear = false;
  std::string coord;         // coordinate_transformation_mode
  std::string nearest_mode;  // rounding of a nearest source coordinate
  // Per spatial axis (H, W): the ONNX scale (given, or out/in for the sizes form), whether
  // it came from `sizes`, and the output length.
  std::array<double, 2> scale = {1, 1};
  bool from_sizes = false;
  std::array<int64_t, 2> out = {1, 1};
};

bool OneOf(const std::string& v, std::initializer_list<const char*> allowed) {
  for (const char* a : allowed) {
    if (v == a) return true;
  }
  return false;
}

// Input i as a non-empty constant; nullptr when absent or empty (Resize-11 passes an empty
// `scales` next to `sizes`); an error when it is a runtime tensor.
absl::StatusOr<const ConstTensor*> OptionalConst(const Node& n, const ShapeContext& ctx, int i,
                                                 const char* what) {
  if (i >= static_cast<int>(n.inputs.size()) || n.inputs[i].empty()) return nullptr;
  const ConstTensor* c = ctx.Const(n, i);
  if (c == nullptr) {
    return NodeError(n,
                     absl::StrCat(what, " must be a constant once input shapes are known (input \"",
                                  n.inputs[i].substr(0, 64), "\" is computed at run time)"));
  }
  return c->size() == 0 ? nullptr : c;
}

absl::StatusOr<ResizeSpec> SpecOf(const Node& n, const ShapeContext& ctx, const Shape& x) {
  if (x.size() != 4) {
    return NodeError(n, absl::StrCat("only 4-D (NCHW) inputs are supported; got rank ", x.size()));
  }
  // Upsample and Resize-10 (two inputs) have no coordinate attributes: ONNX defines them
  // with x_original = x_resized / scale and nearest rounding down (PyTorch's opset-9 export).
  const bool legacy = n.op == "Upsample" || n.inputs.size() == 2;
  ResizeSpec s;
  const std::string mode = n.StringAttr("mode", "nearest");
  if (!OneOf(mode, {"nearest", "linear", "bilinear"}) || (mode == "bilinear" && !legacy)) {
    return NodeError(
        n, absl::StrCat("mode \"", mode.substr(0, 32), "\" is not supported (nearest, linear)"));
  }
  s.linear = mode != "nearest";
  s.coord = legacy ? "asymmetric" : n.StringAttr("coordinate_transformation_mode", "half_pixel");
  if (!OneOf(s.coord, {"half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"})) {
    return NodeError(
        n, absl::StrCat("coordinate_transformation_mode \"", s.coord.substr(0, 32),
                        "\" is not supported (half_pixel, pytorch_half_pixel, align_corners, "
                        "asymmetric)"));
  }
  s.nearest_mode = legacy ? "floor" : n.StringAttr("nearest_mode", "round_prefer_floor");
  if (!s.linear &&
      !OneOf(s.nearest_mode, {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"})) {
    return NodeError(
        n,
        absl::StrCat("nearest_mode \"", s.nearest_mode.substr(0, 32),
                     "\" is not supported (floor, ceil, round_prefer_floor, round_prefer_ceil)"));
  }
  if (n.HasAttr("axes")) return NodeError(n, "attribute axes is not supported (opset 18)");

  std::vector<double> scales;
  const ConstTensor* sizes = nullptr;
  if (n.op == "Upsample" && n.HasAttr("scales")) {
    auto it = n.attrs.find("scales");
    for (float f : it->second.floats) scales.push_back(f);
  } else {
    ASSIGN_OR_RETURN(const ConstTensor* sc, OptionalConst(n, ctx, legacy ? 1 : 2, "scales"));
    if (!legacy) {
      ASSIGN_OR_RETURN(sizes, OptionalConst(n, ctx, 3, "sizes"));
    }
    if (sc != nullptr && sizes != nullptr)
      return NodeError(n, "only one of scales and sizes may be given");
    if (sc != nullptr) {
      for (int64_t i = 0; i < sc->size(); ++i) scales.push_back(sc->AsDouble(i));
    }
  }
  if (sizes != nullptr) {
    if (sizes->size() != 4)
      return NodeError(n, absl::StrCat("sizes has ", sizes->size(), " values; expected 4"));
    if (sizes->AsInt(0) != x[0] || sizes->AsInt(1) != x[1]) {
      return NodeError(n, "only H and W may be resized (sizes must keep N and C)");
    }
    s.from_sizes = true;
    for (int i = 0; i < 2; ++i) {
      const int64_t o = sizes->AsInt(2 + i);
      if (o < 1 || o > kMaxTensorElements) {
        return NodeError(n, absl::StrCat("sizes[", 2 + i, "] = ", o, " is outside [1, ",
                                         kMaxTensorElements, "]"));
      }
      s.out[i] = o;
      s.scale[i] = static_cast<double>(o) / static_cast<double>(x[2 + i]);
    }
    return s;
  }
  if (scales.empty()) return NodeError(n, "neither scales nor sizes is given");
  if (scales.size() != 4)
    return NodeError(n, absl::StrCat("scales has ", scales.size(), " values; expected 4"));
  if (scales[0] != 1 || scales[1] != 1)
    return NodeError(n, "only H and W may be resized (scales[0:2] must be 1)");
  for (int i = 0; i < 2; ++i) {
    const double sc = scales[2 + i];
    // Bounded before the product so floor(in * scale) cannot overflow.
    if (!(sc > 0) || sc > static_cast<double>(kMaxTensorElements)) {
      return NodeError(n, absl::StrCat("scales[", 2 + i, "] = ", sc, " is outside (0, ",
                                       kMaxTensorElements, "]"));
    }
    const double o = std::floor(static_cast<double>(x[2 + i]) * sc);
    if (o < 1 || o > static_cast<double>(kMaxTensorElements)) {
      return NodeError(n, absl::StrCat("scales[", 2 + i, "] = ", sc, " makes output dim ", 2 + i,
                                       " ", o, " for input dim ", x[2 + i], "; it must be in [1, ",
                                       kMaxTensorElements, "]"));
    }
    s.scale[i] = sc;
    s.out[i] = static_cast<int64_t>(o);
  }
  return s;
}

// How output index o of an axis reads its input: x[lo] * (1 - w) + x[hi] * w.
struct AxisTable {
  std::vector<int64_t> lo, hi;
  std::vector<float> w;
};

// Source coordinates in float as PyTorch computes them (upsample kernels: `scale` is
// in/out, or 1/scale_factor when the export carried scales), so nearest indices agree
// with it exactly at ties such as 3 * (10/6).
AxisTable TableFor(const ResizeSpec& s, int axis, int64_t in) {
  const int64_t out = s.out[axis];
  float inv;
  if (s.coord == "align_corners") {
    inv = out > 1 ? static_cast<float>(in - 1) / static_cast<float>(out - 1) : 0.f;
  } else if (s.from_sizes) {
    inv = static_cast<float>(in) / static_cast<float>(out);
  } else {
    inv = static_cast<float>(1.0 / s.scale[axis]);
  }
  AxisTable t;
  t.lo.resize(out);
  t.hi.resize(out);
  t.w.assign(out, 0.f);
  for (int64_t o = 0; o < out; ++o) {
    const float of = static_cast<float>(o);
    float src;
    if (s.coord == "half_pixel" || (s.coord == "pytorch_half_pixel" && out > 1)) {
      src = inv * (of + 0.5f) - 0.5f;
    } else if (s.coord == "pytorch_half_pixel") {
      src = 0.f;
    } else {
      src = inv * of;  // align_corners, asymmetric
    }
    if (s.linear) {
      src = std::max(src, 0.f);
      const int64_t i0 = std::min<int64_t>(static_cast<int64_t>(src), in - 1);
      t.lo[o] = i0;
      t.hi[o] = std::min<int64_t>(i0 + 1, in - 1);
      t.w[o] = t.hi[o] == i0 ? 0.f : src - static_cast<float>(i0);
      continue;
    }
    float r;
    const float fl = std::floor(src);
    if (s.nearest_mode == "floor")
      r = fl;
    else if (s.nearest_mode == "ceil")
      r = std::ceil(src);
    else if (src - fl == 0.5f)
      r = s.nearest_mode == "round_prefer_floor" ? fl : fl + 1;
    else
      r = std::round(src);
    const int64_t i = std::clamp<int64_t>(static_cast<int64_t>(r), 0, in - 1);
    t.lo[o] = t.hi[o] = i;
  }
  return t;
}

// Whether oneDNN's resampling computes exactly this node. Its linear mode maps
// dst -> (dst + 0.5) * in / out - 0.5 with border clamping (half-pixel centres, from the
// dims, not from a scale); its nearest mode rounds (dst + 0.5) * in / out - 0.5, which is
// floor(dst / k) only for an integer upsampling factor k.
bool OneDnnMatches(const ResizeSpec& s, const dims& x) {
  for (int i = 0; i < 2; ++i) {
    const int64_t in = x[2 + i], out = s.out[i];
    // With scales, the node's ratio is 1/scale; oneDNN's is in/out: they must agree.
    if (!s.from_sizes && static_cast<double>(in) * s.scale[i] != static_cast<double>(out))
      return false;
    if (s.linear) {
      if (!(s.coord == "half_pixel" || (s.coord == "pytorch_half_pixel" && out > 1))) return false;
    } else {
      if (s.coord != "asymmetric" || s.nearest_mode != "floor" || out % in != 0) return false;
    }
  }
  return true;
}

void ResizePlanes(const float* src, float* dst, int64_t planes, int64_t ih, int64_t iw,
                  const AxisTable& th, const AxisTable& tw, bool linear) {
  const int64_t oh = th.lo.size(), ow = tw.lo.size();
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    const float* in = src + p * ih * iw;
    float* out = dst + p * oh * ow;
    for (int64_t y = 0; y < oh; ++y) {
      const float* r0 = in + th.lo[y] * iw;
      float* row = out + y * ow;
      if (!linear) {
        for (int64_t x = 0; x < ow; ++x) row[x] = r0[tw.lo[x]];
        continue;
      }
      const float* r1 = in + th.hi[y] * iw;
      const float wy = th.w[y];
      for (int64_t x = 0; x < ow; ++x) {
        const float wx = tw.w[x];
        const float top = (1.f - wx) * r0[tw.lo[x]] + wx * r0[tw.hi[x]];
        const float bottom = (1.f - wx) * r1[tw.lo[x]] + wx * r1[tw.hi[x]];
        row[x] = (1.f - wy) * top + wy * bottom;
      }
    }
  }
}

}  // namespace

absl::Status LowerResize(const FusedNode& f, LoweringContext& ctx) {
  const Node& n = f.node;
  const dims x = ctx.DimsOf(n.inputs[0]), y = ctx.DimsOf(n.outputs[0]);
  ASSIGN_OR_RETURN(ResizeSpec s, SpecOf(n, ShapeContext(ctx.graph()), x));
  const std::string what =
      absl::StrCat("resize ", n.name, s.linear ? " linear " : " nearest ", s.coord);
  Val out;
  if (OneDnnMatches(s, x)) {
    ASSIGN_OR_RETURN(Val src, ctx.Get(n.inputs[0]));
    using R = dnnl::resampling_forward;
    const auto alg =
        s.linear ? dnnl::algorithm::resampling_linear : dnnl::algorithm::resampling_nearest;
    R::primitive_desc pd(R::desc(dnnl::prop_kind::forward_inference, alg, src.desc,
                                 WithType(Any(y), src.desc.data_type())),
                         ctx.Attr(), CpuEngine());
    out = ctx.NewVal(pd.dst_desc());
    ctx.AddStep(what, pd, R(pd), {{DNNL_ARG_SRC, ctx.Ref(src)}, {DNNL_ARG_DST, ctx.Ref(out)}});
  } else {
    ASSIGN_OR_RETURN(Val src, ctx.PlainVal(n.inputs[0]));
    out = ctx.NewVal(Plain(y));
    auto th = std::make_shared<const AxisTable>(TableFor(s, 0, x[2]));
    auto tw = std::make_shared<const AxisTable>(TableFor(s, 1, x[3]));
    const int src_ref = ctx.Ref(src), dst_ref = ctx.Ref(out);
    const int64_t planes = x[0] * x[1], ih = x[2], iw = x[3];
    const bool linear = s.linear;
    PlanStep step;
    step.what = absl::StrCat(what, " [custom:plain]");
    step.args = {{DNNL_ARG_SRC, src_ref}, {DNNL_ARG_DST, dst_ref}};
    step.custom = [=](const std::vector<dnnl::memory>& mems, BnObservations*) {
      ResizePlanes(static_cast<const float*>(mems[src_ref].get_data_handle()),
                   static_cast<float*>(mems[dst_ref].get_data_handle()), planes, ih, iw, *th, *tw,
                   linear);
    };
    ctx.AddCustomStep(std::move(step));
  }
  ctx.Define(f.output, out);
  return absl::OkStatus();
}

absl::StatusOr<Shape> InferResizeShape(const Node& n, const ShapeContext& ctx) {
  ASSIGN_OR_RETURN(Shape x, ctx.InputShape(n, 0));
  ASSIGN_OR_RETURN(ResizeSpec s, SpecOf(n, ctx, x));
  return Shape{x[0], x[1], s.out[0], s.out[1]};
}

}  // namespace normserve
