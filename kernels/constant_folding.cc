#include "kernels/constant_folding.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "kernels/tensor.h"

namespace normserve {
namespace {

using FoldFunction = absl::StatusOr<ConstTensor> (*)(const Node& n, const ShapeContext& ctx);

int64_t Numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::vector<int64_t> Strides(const Shape& s) {
  std::vector<int64_t> st(s.size(), 1);
  for (int i = static_cast<int>(s.size()) - 2; i >= 0; --i) st[i] = st[i + 1] * s[i + 1];
  return st;
}

bool IsInt(const ConstTensor& t) { return t.type == ElementType::kInt64; }

// An empty tensor of `shape` with `like`'s element type, after the shape passed the limit.
absl::StatusOr<ConstTensor> Empty(const Node& n, ElementType type, Shape shape) {
  RETURN_IF_ERROR(
      CheckTensorShape(absl::StrCat("node \"", n.name, "\" (", n.op, ") output"), shape));
  ConstTensor r;
  r.type = type;
  r.shape = std::move(shape);
  if (r.type == ElementType::kInt64)
    r.ints.reserve(Numel(r.shape));
  else
    r.floats.reserve(Numel(r.shape));
  return r;
}

void Push(ConstTensor& r, const ConstTensor& src, int64_t i) {
  if (IsInt(r))
    r.ints.push_back(src.AsInt(i));
  else
    r.floats.push_back(static_cast<float>(src.AsDouble(i)));
}

// Flat index into `in` of output element `flat` under numpy broadcasting to `out`.
int64_t BroadcastIndex(const Shape& out, const std::vector<int64_t>& out_strides, const Shape& in,
                       int64_t flat) {
  const size_t off = out.size() - in.size();
  int64_t idx = 0, stride = 1;
  for (int k = static_cast<int>(in.size()) - 1; k >= 0; --k) {
    const int64_t coord = (flat / out_strides[k + off]) % out[k + off];
    if (in[k] != 1) idx += coord * stride;
    stride *= in[k];
  }
  return idx;
}

absl::StatusOr<const ConstTensor*> In(const Node& n, const ShapeContext& ctx, int i) {
  const ConstTensor* t = ctx.Const(n, i);
  if (t == nullptr) return NodeError(n, absl::StrCat("missing input ", i));
  return t;
}

std::vector<int64_t> Ints(const ConstTensor& t) {
  std::vector<int64_t> v(t.size());
  for (int64_t i = 0; i < t.size(); ++i) v[i] = t.AsInt(i);
  return v;
}

absl::StatusOr<ConstTensor> FoldIdentity(const Node& n, const ShapeContext& ctx) {
  ASSIGN_OR_RETURN(const ConstTensor* a, In(n, ctx, 0));
  return *a;
}

absl::StatusOr<ConstTensor> FoldView(const Node& n, const ShapeContext& ctx) {
  ASSIGN_OR_RETURN(const ConstTensor* a, In(n, ctx, 0));
  ASSIGN_OR_RETURN(Shape s, ViewShape(n, ctx, a->shape));
  ConstTensor r = *a;
  r.shape = s;
  return r;
}

absl::StatusOr<ConstTensor> FoldCast(const Node& n, const ShapeContext& ctx) {
  ASSIGN_OR_RETURN(const ConstTensor* a, In(n, ctx, 0));
  const int64_t to = n.IntAttr("to", 1);
  const bool to_float = to == 1 || to == 10 || to == 11 || to == 16;
  ASSIGN_OR_RETURN(ConstTensor r,
                   Empty(n, to_float ? ElementType::kFloat32 : ElementType::kInt64, a->shape));
  for (int64_t i = 0; i < a->size(); ++i) {
    if (to_float)
      r.floats.push_back(static_cast<float>(a->AsDouble(i)));
    else if (to == 9)
      r.ints.push_back(a->AsDouble(i) != 0 ? 1 : 0);  // bool
    else
      r.ints.push_back(a->AsInt(i));
  }
  return r;
}

// Element-wise on one to three broadcast inputs, in double (int64 when all are int64).
absl::StatusOr<ConstTensor> FoldElementwise(const Node& n, const ShapeContext& ctx) {
  std::vector<const ConstTensor*> in;
  for (size_t i = 0; i < n.inputs.size(); ++i) {
    ASSIGN_OR_RETURN(const ConstTensor* t, In(n, ctx, i));
    in.push_back(t);
  }
  const std::string& op = n.op;
  const size_t arity = op == "Where" ? 3
                       : (op == "Sqrt" || op == "Reciprocal" || op == "Neg" || op == "Exp" ||
                          op == "Abs" || op == "Relu" || op == "Sigmoid")
                           ? 1
                           : 2;
  if (in.size() != arity) return NodeError(n, absl::StrCat("expected ", arity, " inputs"));
  Shape out = in[0]->shape;
  for (size_t i = 1; i < in.size(); ++i) {
    auto s = BroadcastShapes(out, in[i]->shape);
    if (!s.ok()) return NodeError(n, std::string(s.status().message()));
    out = *s;
  }
  const bool ints =
      op == "Where" ? IsInt(*in[1]) && IsInt(*in[2])
      : op == "Equal"
          ? true
          : std::all_of(in.begin(), in.end(), [](const ConstTensor* t) { return IsInt(*t); }) &&
                op != "Sqrt" && op != "Reciprocal" && op != "Exp" && op != "Sigmoid";
  ASSIGN_OR_RETURN(ConstTensor r,
                   Empty(n, ints ? ElementType::kInt64 : ElementType::kFloat32, out));
  const auto so = Strides(out);
  const int64_t total = Numel(out);
  for (int64_t i = 0; i < total; ++i) {
    auto at = [&](size_t k) { return BroadcastIndex(out, so, in[k]->shape, i); };
    if (ints && op != "Equal" && op != "Where") {
      const int64_t x = in[0]->AsInt(at(0)), y = arity > 1 ? in[1]->AsInt(at(1)) : 0;
      int64_t v = 0;
      if (op == "Add")
        v = x + y;
      else if (op == "Sub")
        v = x - y;
      else if (op == "Mul")
        v = x * y;
      else if (op == "Neg")
        v = -x;
      else if (op == "Abs")
        v = x < 0 ? -x : x;
      else if (op == "Relu")
        v = std::max<int64_t>(x, 0);
      else if (op == "Pow")
        v = static_cast<int64_t>(std::pow(static_cast<double>(x), static_cast<double>(y)));
      else {  // Div
        if (y == 0) return NodeError(n, "integer division by zero in constant folding");
        v = x / y;
      }
      r.ints.push_back(v);
      continue;
    }
    if (op == "Where") {
      Push(r, *in[in[0]->AsInt(at(0)) != 0 ? 1 : 2], at(in[0]->AsInt(at(0)) != 0 ? 1 : 2));
      continue;
    }
    const double x = in[0]->AsDouble(at(0)), y = arity > 1 ? in[1]->AsDouble(at(1)) : 0;
    if (op == "Equal") {
      r.ints.push_back(x == y ? 1 : 0);
      continue;
    }
    double v = 0;
    if (op == "Add")
      v = x + y;
    else if (op == "Sub")
      v = x - y;
    else if (op == "Mul")
      v = x * y;
    else if (op == "Div")
      v = x / y;
    else if (op == "Pow")
      v = std::pow(x, y);
    else if (op == "Sqrt")
      v = std::sqrt(x);
    else if (op == "Reciprocal")
      v = 1.0 / x;
    else if (op == "Neg")
      v = -x;
    else if (op == "Exp")
      v = std::exp(x);
    else if (op == "Abs")
      v = std::fabs(x);
    else if (op == "Relu")
      v = std::max(x, 0.0);
    else
      v = 1.0 / (1.0 + std::exp(-x));  // Sigmoid
    r.floats.push_back(static_cast<float>(v));
  }
  return r;
}

absl::StatusOr<ConstTensor> FoldTranspose(const Node& n, const ShapeContext& ctx) {
  ASSIGN_OR_RETURN(const ConstTensor* a, In(n, ctx, 0));
  const Shape& x = a->shape;
  std::vector<int64_t> perm = n.IntsAttr("perm");
  if (perm.empty()) {
    for (int64_t i = x.size() - 1; i >= 0; --i) perm.push_back(i);
  }
  if (perm.size() != x.size()) return NodeError(n, "perm length does not match rank");
  Shape out;
  for (int64_t& p : perm) {
    ASSIGN_OR_RETURN(p, NormAxis(n, p, x.size()));
    out.push_back(x[p]);
  }
  ASSIGN_OR_RETURN(ConstTensor r, Empty(n, a->type, out));
  const auto si = Strides(x), so = Strides(out);
  for (int64_t i = 0; i < Numel(out); ++i) {
    int64_t src = 0;
    for (size_t k = 0; k < out.size(); ++k) src += ((i / so[k]) % out[k]) * si[perm[k]];
    Push(r, *a, src);
  }
  return r;
}

absl::StatusOr<ConstTensor> FoldConcat(const Node& n, const ShapeContext& ctx) {
  ASSIGN_OR_RETURN(const ConstTensor* a, In(n, ctx, 0));
  const int64_t rank = std::max<int64_t>(1, a->shape.size());
  ASSIGN_OR_RETURN(int64_t axis, NormAxis(n, n.IntAttr("axis", 0), rank));
  Shape out = a->shape.empty() ? Shape{1} : a->shape;
  out[axis] = 0;
  std::vector<const ConstTensor*> in;
  bool all_int = true;
  for (size_t i = 0; i < n.inputs.size(); ++i) {
    ASSIGN_OR_RETURN(const ConstTensor* t, In(n, ctx, i));
    const Shape s = t->shape.empty() ? Shape{1} : t->shape;
    if (static_cast<int64_t>(s.size()) != rank) return NodeError(n, "inputs have different ranks");
    for (int64_t d = 0; d < rank; ++d) {
      if (d != axis && s[d] != out[d])
        return NodeError(n,
                         absl::StrCat("input ", i, " shape ", ShapeToString(s), " does not match"));
    }
    out[axis] += s[axis];
    all_int &= IsInt(*t);
    in.push_back(t);
  }
  ASSIGN_OR_RETURN(ConstTensor r,
                   Empty(n, all_int ? ElementType::kInt64 : ElementType::kFloat32, out));
  int64_t outer = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= out[d];
  for (int64_t o = 0; o < outer; ++o) {
    for (const ConstTensor* t : in) {
      const int64_t chunk = outer == 0 ? 0 : t->size() / outer;
      for (int64_t k = 0; k < chunk; ++k) Push(r, *t, o * chunk + k);
    }
  }
  return r;
}

absl::StatusOr<ConstTensor> FoldGather(const Node& n, const ShapeContext& ctx) {
  ASSIGN_OR_RETURN(const ConstTensor* a, In(n, ctx, 0));
  ASSIGN_OR_RETURN(const ConstTensor* idx, In(n, ctx, 1));
  if (a->shape.empty()) return NodeError(n, "data must have rank >= 1");
  ASSIGN_OR_RETURN(int64_t axis, NormAxis(n, n.IntAttr("axis", 0), a->shape.size()));
  Shape out(a->shape.begin(), a->shape.begin() + axis);
  out.insert(out.end(), idx->shape.begin(), idx->shape.end());
  out.insert(out.end(), a->shape.begin() + axis + 1, a->shape.end());
  ASSIGN_OR_RETURN(ConstTensor r, Empty(n, a->type, out));
  const int64_t dim = a->shape[axis];
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= a->shape[d];
  for (size_t d = axis + 1; d < a->shape.size(); ++d) inner *= a->shape[d];
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t j = 0; j < idx->size(); ++j) {
      int64_t k = idx->AsInt(j);
      if (k < 0) k += dim;
      if (k < 0 || k >= dim)
        return NodeError(n, absl::StrCat("index ", idx->AsInt(j), " out of range for dim ", dim));
      for (int64_t i = 0; i < inner; ++i) Push(r, *a, (o * dim + k) * inner + i);
    }
  }
  return r;
}

absl::StatusOr<ConstTensor> FoldSlice(const Node& n, const ShapeContext& ctx) {
  ASSIGN_OR_RETURN(const ConstTensor* a, In(n, ctx, 0));
  const Shape& x = a->shape;
  std::vector<int64_t> starts, ends, axes, steps;
  if (n.HasAttr("starts")) {  // opset < 10
    starts = n.IntsAttr("starts");
    ends = n.IntsAttr("ends");
    axes = n.IntsAttr("axes");
  } else {
    ASSIGN_OR_RETURN(const ConstTensor* s, In(n, ctx, 1));
    ASSIGN_OR_RETURN(const ConstTensor* e, In(n, ctx, 2));
    starts = Ints(*s);
    ends = Ints(*e);
    if (const ConstTensor* t = ctx.Const(n, 3)) axes = Ints(*t);
    if (const ConstTensor* t = ctx.Const(n, 4)) steps = Ints(*t);
  }
  if (axes.empty()) {
    for (size_t i = 0; i < starts.size(); ++i) axes.push_back(i);
  }
  if (steps.empty()) steps.assign(starts.size(), 1);
  if (ends.size() != starts.size() || axes.size() != starts.size() ||
      steps.size() != starts.size()) {
    return NodeError(n, "starts, ends, axes and steps differ in length");
  }
  std::vector<int64_t> first(x.size(), 0), step(x.size(), 1);
  Shape out = x;
  for (size_t i = 0; i < starts.size(); ++i) {
    ASSIGN_OR_RETURN(int64_t ax, NormAxis(n, axes[i], x.size()));
    const int64_t dim = x[ax], st = steps[i];
    if (st == 0) return NodeError(n, "step 0");
    // ONNX clamping: [0, dim] for a positive step, [-1, dim - 1] for a negative one.
    int64_t b = starts[i], e = ends[i];
    if (b < 0) b += dim;
    if (e < 0) e += dim;
    if (st > 0) {
      b = std::clamp<int64_t>(b, 0, dim);
      e = std::clamp<int64_t>(e, 0, dim);
      out[ax] = e > b ? (e - b + st - 1) / st : 0;
    } else {
      b = std::clamp<int64_t>(b, -1, dim - 1);
      e = std::clamp<int64_t>(e, -1, dim - 1);
      out[ax] = b > e ? (b - e - st - 1) / -st : 0;
    }
    first[ax] = b;
    step[ax] = st;
  }
  ASSIGN_OR_RETURN(ConstTensor r, Empty(n, a->type, out));
  const auto si = Strides(x), so = Strides(out);
  for (int64_t i = 0; i < Numel(out); ++i) {
    int64_t src = 0;
    for (size_t k = 0; k < out.size(); ++k)
      src += (first[k] + ((i / so[k]) % out[k]) * step[k]) * si[k];
    Push(r, *a, src);
  }
  return r;
}

absl::StatusOr<ConstTensor> FoldExpand(const Node& n, const ShapeContext& ctx) {
  ASSIGN_OR_RETURN(const ConstTensor* a, In(n, ctx, 0));
  ASSIGN_OR_RETURN(const ConstTensor* shape, In(n, ctx, 1));
  auto out = BroadcastShapes(a->shape, Ints(*shape));
  if (!out.ok()) return NodeError(n, std::string(out.status().message()));
  ASSIGN_OR_RETURN(ConstTensor r, Empty(n, a->type, *out));
  const auto so = Strides(*out);
  for (int64_t i = 0; i < Numel(*out); ++i) Push(r, *a, BroadcastIndex(*out, so, a->shape, i));
  return r;
}

absl::StatusOr<ConstTensor> FoldConstantOfShape(const Node& n, const ShapeContext& ctx) {
  ASSIGN_OR_RETURN(const ConstTensor* a, In(n, ctx, 0));
  auto it = n.attrs.find("value");
  const bool ints = it != n.attrs.end() && it->second.t.type == ElementType::kInt64;
  ASSIGN_OR_RETURN(ConstTensor r,
                   Empty(n, ints ? ElementType::kInt64 : ElementType::kFloat32, Ints(*a)));
  const int64_t count = Numel(r.shape);
  if (ints)
    r.ints.assign(count, it->second.t.ints.empty() ? 0 : it->second.t.ints[0]);
  else
    r.floats.assign(
        count, it == n.attrs.end() || it->second.t.floats.empty() ? 0.f : it->second.t.floats[0]);
  return r;
}

absl::StatusOr<ConstTensor> FoldRange(const Node& n, const ShapeContext& ctx) {
  ASSIGN_OR_RETURN(const ConstTensor* start, In(n, ctx, 0));
  ASSIGN_OR_RETURN(const ConstTensor* limit, In(n, ctx, 1));
  ASSIGN_OR_RETURN(const ConstTensor* delta, In(n, ctx, 2));
  if (start->size() != 1 || limit->size() != 1 || delta->size() != 1)
    return NodeError(n, "inputs must be scalars");
  const double s = start->AsDouble(0), l = limit->AsDouble(0), d = delta->AsDouble(0);
  if (d == 0) return NodeError(n, "delta 0");
  const double count = std::max(std::ceil((l - s) / d), 0.0);
  if (!(count <= static_cast<double>(kMaxTensorElements))) {
    return NodeError(n, absl::StrCat("more than the limit of ", kMaxTensorElements, " elements"));
  }
  ASSIGN_OR_RETURN(ConstTensor r, Empty(n, start->type, {static_cast<int64_t>(count)}));
  for (int64_t i = 0; i < r.shape[0]; ++i) {
    if (IsInt(r))
      r.ints.push_back(start->AsInt(0) + i * delta->AsInt(0));
    else
      r.floats.push_back(static_cast<float>(s + i * d));
  }
  return r;
}

const absl::flat_hash_map<std::string, FoldFunction>& FoldTable() {
  static const auto* table = new absl::flat_hash_map<std::string, FoldFunction>{
      {"Abs", FoldElementwise},
      {"Add", FoldElementwise},
      {"Cast", FoldCast},
      {"Concat", FoldConcat},
      {"ConstantOfShape", FoldConstantOfShape},
      {"Div", FoldElementwise},
      {"Dropout", FoldIdentity},
      {"Equal", FoldElementwise},
      {"Exp", FoldElementwise},
      {"Expand", FoldExpand},
      {"Flatten", FoldView},
      {"Gather", FoldGather},
      {"Identity", FoldIdentity},
      {"Mul", FoldElementwise},
      {"Neg", FoldElementwise},
      {"Pow", FoldElementwise},
      {"Range", FoldRange},
      {"Reciprocal", FoldElementwise},
      {"Relu", FoldElementwise},
      {"Reshape", FoldView},
      {"Sigmoid", FoldElementwise},
      {"Slice", FoldSlice},
      {"Sqrt", FoldElementwise},
      {"Squeeze", FoldView},
      {"Sub", FoldElementwise},
      {"Transpose", FoldTranspose},
      {"Unsqueeze", FoldView},
      {"Where", FoldElementwise},
  };
  return *table;
}

}  // namespace

bool CanFoldConstant(const std::string& op) { return FoldTable().contains(op); }

absl::StatusOr<ConstTensor> FoldConstantNode(const Node& n, const ShapeContext& ctx) {
  auto it = FoldTable().find(n.op);
  if (it == FoldTable().end()) {
    return NodeError(
        n, "all inputs are constants, and constant folding has no implementation of this operator");
  }
  return it->second(n, ctx);
}

}  // namespace normserve
