#include "kernels/constant_folding.h"

#include <algorithm>
#include <cmath>
#include <utility>

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

std::vector<int64_t> Strides(const Shape& s) {
  std::vector<int64_t> st(s.size(), 1);
  for (int i = static_cast<int>(s.size()) - 2; i >= 0; --i) st[i] = st[i + 1] * s[i + 1];
  return st;
}

// Elementwise binary on constants with broadcasting (shape arithmetic and small float math).
absl::StatusOr<ConstTensor> FoldBinary(const Node& n, const ConstTensor& a, const ConstTensor& b) {
  ASSIGN_OR_RETURN(Shape out, BroadcastShapes(a.shape, b.shape));
  RETURN_IF_ERROR(CheckTensorShape(absl::StrCat("node \"", n.name, "\" (", n.op, ") output"), out));
  ConstTensor r;
  r.shape = out;
  const bool ints = a.type == ElementType::kInt64 && b.type == ElementType::kInt64;
  r.type = ints ? ElementType::kInt64 : ElementType::kFloat32;
  const int64_t total = Numel(out);
  const auto so = Strides(out);
  auto index = [&](const ConstTensor& t, int64_t flat) {
    const size_t off = out.size() - t.shape.size();
    const auto st = Strides(t.shape);
    int64_t idx = 0;
    for (size_t k = 0; k < t.shape.size(); ++k) {
      const int64_t coord = (flat / so[k + off]) % out[k + off];
      if (t.shape[k] != 1) idx += coord * st[k];
    }
    return idx;
  };
  for (int64_t i = 0; i < total; ++i) {
    const int64_t ia = index(a, i), ib = index(b, i);
    if (ints) {
      const int64_t x = a.ints[ia], y = b.ints[ib];
      int64_t v = 0;
      if (n.op == "Add") v = x + y;
      else if (n.op == "Sub") v = x - y;
      else if (n.op == "Mul") v = x * y;
      else {
        if (y == 0) return NodeError(n, "integer division by zero in constant folding");
        v = x / y;
      }
      r.ints.push_back(v);
    } else {
      const double x = a.AsDouble(ia), y = b.AsDouble(ib);
      double v = 0;
      if (n.op == "Add") v = x + y;
      else if (n.op == "Sub") v = x - y;
      else if (n.op == "Mul") v = x * y;
      else if (n.op == "Div") v = x / y;
      else v = std::pow(x, y);
      r.floats.push_back(static_cast<float>(v));
    }
  }
  return r;
}

}  // namespace

absl::StatusOr<std::optional<ConstTensor>> FoldConstantNode(const Node& n, const ShapeContext& ctx) {
  const ConstTensor* a = ctx.Const(n, 0);
  if (a == nullptr) return NodeError(n, "missing input 0");
  ConstTensor r;
  if (n.op == "Identity" || n.op == "Dropout") {
    r = *a;
  } else if (n.op == "Cast") {
    const int64_t to = n.IntAttr("to", 1);
    r.shape = a->shape;
    if (to == 1 || to == 11) {
      r.type = ElementType::kFloat32;
      for (int64_t i = 0; i < a->size(); ++i) r.floats.push_back(static_cast<float>(a->AsDouble(i)));
    } else {
      r.type = ElementType::kInt64;
      for (int64_t i = 0; i < a->size(); ++i) r.ints.push_back(a->AsInt(i));
    }
  } else if (n.op == "Gather") {
    const ConstTensor* idx = ctx.Const(n, 1);
    ASSIGN_OR_RETURN(int64_t axis, NormAxis(n, n.IntAttr("axis", 0), std::max<int64_t>(1, a->shape.size())));
    if (a->shape.size() != 1 || axis != 0) return NodeError(n, "constant Gather supports 1-D data only");
    r.type = a->type;
    r.shape = idx->shape;
    for (int64_t i = 0; i < idx->size(); ++i) {
      int64_t k = idx->AsInt(i);
      if (k < 0) k += a->shape[0];
      if (k < 0 || k >= a->shape[0]) return NodeError(n, absl::StrCat("index ", idx->AsInt(i), " out of range"));
      if (a->type == ElementType::kInt64) r.ints.push_back(a->ints[k]);
      else r.floats.push_back(a->floats[k]);
    }
  } else if (n.op == "Unsqueeze" || n.op == "Squeeze" || n.op == "Reshape" || n.op == "Flatten") {
    ASSIGN_OR_RETURN(Shape s, ViewShape(n, ctx, a->shape));
    r = *a;
    r.shape = s;
  } else if (n.op == "Concat") {
    ASSIGN_OR_RETURN(int64_t axis, NormAxis(n, n.IntAttr("axis", 0), std::max<int64_t>(1, a->shape.size())));
    if (axis != 0 || a->shape.size() > 1) return NodeError(n, "constant Concat supports 1-D tensors only");
    r.type = a->type;
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      const ConstTensor* t = ctx.Const(n, i);
      for (int64_t k = 0; k < t->size(); ++k) {
        if (r.type == ElementType::kInt64) r.ints.push_back(t->AsInt(k));
        else r.floats.push_back(static_cast<float>(t->AsDouble(k)));
      }
    }
    r.shape = {r.size()};
  } else if (n.op == "Slice") {
    if (a->shape.size() != 1) return NodeError(n, "constant Slice supports 1-D tensors only");
    const int64_t len = a->shape[0];
    int64_t start = ctx.Const(n, 1)->AsInt(0), end = ctx.Const(n, 2)->AsInt(0);
    const int64_t step = ctx.Const(n, 4) ? ctx.Const(n, 4)->AsInt(0) : 1;
    if (step != 1) return NodeError(n, "constant Slice supports step 1 only");
    if (start < 0) start += len;
    if (end < 0) end += len;
    start = std::clamp<int64_t>(start, 0, len);
    end = std::clamp<int64_t>(end, start, len);
    r.type = a->type;
    for (int64_t k = start; k < end; ++k) {
      if (r.type == ElementType::kInt64) r.ints.push_back(a->ints[k]);
      else r.floats.push_back(a->floats[k]);
    }
    r.shape = {end - start};
  } else if (n.op == "Add" || n.op == "Sub" || n.op == "Mul" || n.op == "Div" || n.op == "Pow") {
    ASSIGN_OR_RETURN(r, FoldBinary(n, *a, *ctx.Const(n, 1)));
  } else if (n.op == "ConstantOfShape") {
    Shape s;
    for (int64_t i = 0; i < a->size(); ++i) s.push_back(a->AsInt(i));
    RETURN_IF_ERROR(CheckTensorShape(absl::StrCat("node \"", n.name, "\" (", n.op, ") output"), s));
    auto it = n.attrs.find("value");
    r.shape = s;
    const int64_t count = Numel(s);
    if (it != n.attrs.end() && it->second.t.type == ElementType::kInt64) {
      r.type = ElementType::kInt64;
      r.ints.assign(count, it->second.t.ints.empty() ? 0 : it->second.t.ints[0]);
    } else {
      r.floats.assign(count, it == n.attrs.end() || it->second.t.floats.empty() ? 0.f : it->second.t.floats[0]);
    }
  } else {
    // No reference implementation here: the node runs at inference like any other.
    return std::optional<ConstTensor>();
  }
  return std::optional<ConstTensor>(std::move(r));
}

}  // namespace normserve
