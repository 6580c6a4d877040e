#include "kernels/shape_inference.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "kernels/tensor.h"

namespace normserve {
namespace {

int64_t Numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

absl::StatusOr<Shape> ReshapeTarget(const Node& n, const Shape& in, const ConstTensor& spec) {
  Shape out;
  int64_t infer = -1, known = 1;
  const bool allowzero = n.IntAttr("allowzero", 0) != 0;
  for (int64_t i = 0; i < spec.size(); ++i) {
    int64_t d = spec.AsInt(i);
    if (d == 0 && !allowzero) {
      if (i >= static_cast<int64_t>(in.size())) return NodeError(n, "0 in shape beyond input rank");
      d = in[i];
    }
    if (d == -1) {
      if (infer >= 0) return NodeError(n, "more than one -1 in target shape");
      infer = i;
      out.push_back(1);
      continue;
    }
    if (d < 0 || d > kMaxTensorElements) {
      return NodeError(n, absl::StrCat("invalid dim ", d, " in target shape; dims must be in [0, ",
                                       kMaxTensorElements, "]"));
    }
    if (d != 0 && known > kMaxTensorElements / d) {
      return NodeError(
          n, absl::StrCat("target shape has more than ", kMaxTensorElements, " elements"));
    }
    known *= d;
    out.push_back(d);
  }
  const int64_t total = Numel(in);
  if (infer >= 0) {
    if (known == 0 || total % known != 0) {
      return NodeError(
          n, absl::StrCat("cannot reshape ", ShapeToString(in), " to ", ShapeToString(out)));
    }
    out[infer] = total / known;
  }
  if (Numel(out) != total) {
    return NodeError(n, absl::StrCat("cannot reshape ", ShapeToString(in), " (", total,
                                     " elements) to ", ShapeToString(out)));
  }
  return out;
}

// Pool / conv output size along one spatial dim (ONNX semantics, incl. ceil_mode).
int64_t OutDim(int64_t in, int64_t k, int64_t s, int64_t d, int64_t pb, int64_t pe,
               bool ceil_mode) {
  const int64_t eff = (k - 1) * d + 1;
  const int64_t span = in + pb + pe - eff;
  int64_t out = (ceil_mode ? (span + s - 1) / s : span / s) + 1;
  // The last window must start inside the input or the left padding (PyTorch/ONNX rule).
  if (ceil_mode && (out - 1) * s >= in + pb) --out;
  return out;
}

}  // namespace

const ConstTensor* ShapeContext::Const(const Node& n, int i) const {
  if (i >= static_cast<int>(n.inputs.size()) || n.inputs[i].empty()) return nullptr;
  auto it = g_.consts.find(n.inputs[i]);
  return it == g_.consts.end() ? nullptr : &it->second;
}

absl::StatusOr<Shape> ShapeContext::InputShape(const Node& n, int i) const {
  if (i >= static_cast<int>(n.inputs.size()) || n.inputs[i].empty()) {
    return NodeError(n, absl::StrCat("missing input ", i));
  }
  auto it = g_.shapes.find(n.inputs[i]);
  if (it != g_.shapes.end()) return it->second;
  auto c = g_.consts.find(n.inputs[i]);
  if (c != g_.consts.end()) return c->second.shape;
  return NodeError(n, absl::StrCat("input \"", n.inputs[i], "\" has no known shape"));
}

absl::Status NodeError(const Node& n, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat("node \"", n.name, "\" (", n.op, "): ", why));
}

absl::StatusOr<int64_t> NormAxis(const Node& n, int64_t axis, int64_t rank) {
  if (axis < -rank || axis >= rank) {
    return NodeError(n, absl::StrCat("axis ", axis, " out of range for rank ", rank));
  }
  return axis < 0 ? axis + rank : axis;
}

absl::StatusOr<std::vector<int64_t>> AxesOf(const Node& n, const ShapeContext& ctx,
                                            int input_index) {
  if (n.HasAttr("axes")) return n.IntsAttr("axes");
  if (static_cast<int>(n.inputs.size()) > input_index && !n.inputs[input_index].empty()) {
    const ConstTensor* c = ctx.Const(n, input_index);
    if (c == nullptr) return NodeError(n, "axes must be a constant");
    std::vector<int64_t> axes;
    for (int64_t i = 0; i < c->size(); ++i) axes.push_back(c->AsInt(i));
    return axes;
  }
  return std::vector<int64_t>{};
}

absl::StatusOr<Shape> ViewShape(const Node& n, const ShapeContext& ctx, const Shape& in) {
  if (n.op == "Reshape") {
    const ConstTensor* spec = ctx.Const(n, 1);
    if (spec == nullptr) return NodeError(n, "target shape must be constant after folding");
    return ReshapeTarget(n, in, *spec);
  }
  if (n.op == "Flatten") {
    ASSIGN_OR_RETURN(int64_t axis, NormAxis(n, n.IntAttr("axis", 1), in.size() + 1));
    int64_t a = 1, b = 1;
    for (int64_t i = 0; i < static_cast<int64_t>(in.size()); ++i) (i < axis ? a : b) *= in[i];
    return Shape{a, b};
  }
  ASSIGN_OR_RETURN(std::vector<int64_t> axes, AxesOf(n, ctx, 1));
  if (n.op == "Unsqueeze") {
    const int64_t rank = in.size() + axes.size();
    Shape out(rank, 0);
    std::vector<bool> mark(rank, false);
    for (int64_t a : axes) {
      ASSIGN_OR_RETURN(int64_t k, NormAxis(n, a, rank));
      mark[k] = true;
    }
    size_t j = 0;
    for (int64_t i = 0; i < rank; ++i) out[i] = mark[i] ? 1 : in[j++];
    return out;
  }
  // Squeeze
  std::vector<bool> drop(in.size(), false);
  if (axes.empty()) {
    for (size_t i = 0; i < in.size(); ++i) drop[i] = in[i] == 1;
  }
  for (int64_t a : axes) {
    ASSIGN_OR_RETURN(int64_t k, NormAxis(n, a, in.size()));
    if (in[k] != 1) return NodeError(n, absl::StrCat("cannot squeeze dim ", k, " of size ", in[k]));
    drop[k] = true;
  }
  Shape out;
  for (size_t i = 0; i < in.size(); ++i) {
    if (!drop[i]) out.push_back(in[i]);
  }
  return out;
}

// Output spatial dims for Conv / pooling (pads, strides, dilations, auto_pad, ceil_mode).
absl::StatusOr<std::array<int64_t, 2>> WindowOutputDims(const Node& n, const Shape& x,
                                                        const std::vector<int64_t>& k) {
  auto strides = n.IntsAttr("strides", {1, 1});
  auto dil = n.IntsAttr("dilations", {1, 1});
  auto pads = n.IntsAttr("pads", {0, 0, 0, 0});
  const std::string auto_pad = n.StringAttr("auto_pad", "NOTSET");
  if (strides.size() != 2 || dil.size() != 2 || pads.size() != 4) {
    return NodeError(n, "strides/dilations/pads must have 2/2/4 values");
  }
  if (auto_pad != "NOTSET" && auto_pad != "VALID") {
    return NodeError(
        n, absl::StrCat("auto_pad=", auto_pad, " is not supported; export with explicit pads"));
  }
  const bool ceil_mode = n.IntAttr("ceil_mode", 0) != 0;
  auto bounded = [&](const char* what, const std::vector<int64_t>& v, int64_t lo) -> absl::Status {
    for (int64_t x : v) {
      if (x < lo || x > kMaxWindowGeometry) {
        return NodeError(
            n, absl::StrCat(what, " ", x, " is outside [", lo, ", ", kMaxWindowGeometry, "]"));
      }
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(bounded("kernel size", k, 1));
  RETURN_IF_ERROR(bounded("stride", strides, 1));
  RETURN_IF_ERROR(bounded("dilation", dil, 1));
  RETURN_IF_ERROR(bounded("pad", pads, 0));
  std::array<int64_t, 2> out;
  for (int i = 0; i < 2; ++i) {
    out[i] = OutDim(x[2 + i], k[i], strides[i], dil[i], pads[i], pads[i + 2], ceil_mode);
    if (out[i] <= 0)
      return NodeError(
          n, absl::StrCat("output spatial dim ", i, " is empty for input ", ShapeToString(x)));
  }
  return out;
}

absl::StatusOr<Shape> SameShapeAsInput(const Node& n, const ShapeContext& ctx) {
  return ctx.InputShape(n, 0);
}

absl::StatusOr<Shape> BroadcastInputShapes(const Node& n, const ShapeContext& ctx) {
  ASSIGN_OR_RETURN(Shape x, ctx.InputShape(n, 0));
  ASSIGN_OR_RETURN(Shape y, ctx.InputShape(n, 1));
  auto s = BroadcastShapes(x, y);
  if (!s.ok()) return NodeError(n, std::string(s.status().message()));
  return *s;
}

}  // namespace normserve
