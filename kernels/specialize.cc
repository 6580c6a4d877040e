#include "kernels/specialize.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "kernels/tensor.h"

namespace normserve {
namespace {

using Shape = std::vector<int64_t>;

absl::Status NodeError(const Node& n, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat("node \"", n.name, "\" (", n.op, "): ", why));
}

int64_t Numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

absl::StatusOr<int64_t> NormAxis(const Node& n, int64_t axis, int64_t rank) {
  if (axis < -rank || axis >= rank) {
    return NodeError(n, absl::StrCat("axis ", axis, " out of range for rank ", rank));
  }
  return axis < 0 ? axis + rank : axis;
}

std::vector<int64_t> Strides(const Shape& s) {
  std::vector<int64_t> st(s.size(), 1);
  for (int i = static_cast<int>(s.size()) - 2; i >= 0; --i) st[i] = st[i + 1] * s[i + 1];
  return st;
}

ConstTensor MakeInts(Shape shape, std::vector<int64_t> v) {
  ConstTensor c;
  c.type = ElementType::kInt64;
  c.shape = std::move(shape);
  c.ints = std::move(v);
  return c;
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

absl::StatusOr<std::vector<int64_t>> AxesOf(const Node& n, const SpecializedGraph& g,
                                            int input_index) {
  if (n.HasAttr("axes")) return n.IntsAttr("axes");
  if (static_cast<int>(n.inputs.size()) > input_index && !n.inputs[input_index].empty()) {
    auto it = g.consts.find(n.inputs[input_index]);
    if (it == g.consts.end()) return NodeError(n, "axes must be a constant");
    std::vector<int64_t> axes;
    for (int64_t i = 0; i < it->second.size(); ++i) axes.push_back(it->second.AsInt(i));
    return axes;
  }
  return std::vector<int64_t>{};
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
      return NodeError(n, absl::StrCat("target shape has more than ", kMaxTensorElements, " elements"));
    }
    known *= d;
    out.push_back(d);
  }
  const int64_t total = Numel(in);
  if (infer >= 0) {
    if (known == 0 || total % known != 0) {
      return NodeError(n, absl::StrCat("cannot reshape ", ShapeToString(in), " to ", ShapeToString(out)));
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
int64_t OutDim(int64_t in, int64_t k, int64_t s, int64_t d, int64_t pb, int64_t pe, bool ceil_mode) {
  const int64_t eff = (k - 1) * d + 1;
  const int64_t span = in + pb + pe - eff;
  int64_t out = (ceil_mode ? (span + s - 1) / s : span / s) + 1;
  // The last window must start inside the input or the left padding (PyTorch/ONNX rule).
  if (ceil_mode && (out - 1) * s >= in + pb) --out;
  return out;
}

class Specializer {
 public:
  Specializer(const Graph& g, SpecializedGraph* out) : g_(g), out_(out) {}

  absl::Status Run(const std::vector<std::vector<int64_t>>& input_shapes) {
    if (input_shapes.size() != g_.inputs.size()) {
      return absl::InvalidArgumentError(absl::StrCat("the model has ", g_.inputs.size(), " inputs; got ",
                                                     input_shapes.size(), " input shapes"));
    }
    for (const auto& [name, t] : g_.initializers) {
      RETURN_IF_ERROR(CheckTensorShape(absl::StrCat("initializer \"", name, "\""), t.shape));
      out_->consts[name] = t;
    }
    for (size_t k = 0; k < g_.inputs.size(); ++k) {
      const ValueSpec& in = g_.inputs[k];
      const Shape& given = input_shapes[k];
      if (given.size() != in.shape.size()) {
        return absl::InvalidArgumentError(absl::StrCat("model input \"", in.name, "\" has rank ", in.shape.size(),
                                                       " (", ShapeToString(in.shape), "); got shape ",
                                                       ShapeToString(given), " of rank ", given.size()));
      }
      for (size_t i = 0; i < given.size(); ++i) {
        if (given[i] < 1) {
          return absl::InvalidArgumentError(absl::StrCat("model input \"", in.name, "\" dim ", i, ": given ",
                                                         given[i], "; dims must be >= 1"));
        }
        if (in.shape[i] >= 0 && in.shape[i] != given[i]) {
          return absl::InvalidArgumentError(absl::StrCat("model input \"", in.name, "\" dim ", i,
                                                         ": declared fixed at ", in.shape[i], ", given ", given[i]));
        }
      }
      RETURN_IF_ERROR(CheckTensorShape(absl::StrCat("model input \"", in.name, "\""), given));
      ValueSpec s = in;
      s.shape = given;
      out_->shapes[s.name] = s.shape;
      out_->inputs.push_back(s);
    }
    for (const Node& n : g_.nodes) {
      RETURN_IF_ERROR(Visit(n));
      for (const std::string& o : n.outputs) {
        if (o.empty()) continue;
        auto shape = out_->shapes.find(o);
        const Shape* s = shape != out_->shapes.end() ? &shape->second : nullptr;
        auto c = out_->consts.find(o);
        if (s == nullptr && c != out_->consts.end()) s = &c->second.shape;
        if (s == nullptr) continue;
        RETURN_IF_ERROR(CheckTensorShape(absl::StrCat("node \"", n.name, "\" (", n.op, ") output \"", o, "\""), *s));
      }
    }
    for (const auto& o : g_.outputs) {
      auto it = out_->shapes.find(o.name);
      if (it == out_->shapes.end()) {
        return absl::InvalidArgumentError(absl::StrCat("graph output \"", o.name, "\" is a constant; not supported"));
      }
      ValueSpec s = o;
      s.shape = it->second;
      out_->outputs.push_back(s);
    }
    return absl::OkStatus();
  }

 private:
  bool AllConst(const Node& n) const {
    for (const auto& i : n.inputs) {
      if (!i.empty() && !out_->consts.contains(i)) return false;
    }
    return true;
  }
  const ConstTensor* C(const Node& n, int i) const {
    if (i >= static_cast<int>(n.inputs.size()) || n.inputs[i].empty()) return nullptr;
    auto it = out_->consts.find(n.inputs[i]);
    return it == out_->consts.end() ? nullptr : &it->second;
  }
  absl::StatusOr<Shape> S(const Node& n, int i) const {
    if (i >= static_cast<int>(n.inputs.size()) || n.inputs[i].empty()) {
      return NodeError(n, absl::StrCat("missing input ", i));
    }
    auto it = out_->shapes.find(n.inputs[i]);
    if (it != out_->shapes.end()) return it->second;
    auto c = out_->consts.find(n.inputs[i]);
    if (c != out_->consts.end()) return c->second.shape;
    return NodeError(n, absl::StrCat("input \"", n.inputs[i], "\" has no known shape"));
  }

  absl::Status Visit(const Node& n) {
    if (n.op == "Shape") {
      ASSIGN_OR_RETURN(Shape s, S(n, 0));
      const int64_t r = s.size();
      int64_t start = n.IntAttr("start", 0), end = n.IntAttr("end", r);
      if (start < 0) start += r;
      if (end < 0) end += r;
      start = std::clamp<int64_t>(start, 0, r);
      end = std::clamp<int64_t>(end, start, r);
      out_->consts[n.outputs[0]] = MakeInts({end - start}, Shape(s.begin() + start, s.begin() + end));
      return absl::OkStatus();
    }
    if (AllConst(n)) return Fold(n);
    return Infer(n);
  }

  absl::Status Fold(const Node& n) {
    const ConstTensor* a = C(n, 0);
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
      const ConstTensor* idx = C(n, 1);
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
      ASSIGN_OR_RETURN(Shape s, ViewShape(n, a->shape));
      r = *a;
      r.shape = s;
    } else if (n.op == "Concat") {
      ASSIGN_OR_RETURN(int64_t axis, NormAxis(n, n.IntAttr("axis", 0), std::max<int64_t>(1, a->shape.size())));
      if (axis != 0 || a->shape.size() > 1) return NodeError(n, "constant Concat supports 1-D tensors only");
      r.type = a->type;
      for (size_t i = 0; i < n.inputs.size(); ++i) {
        const ConstTensor* t = C(n, i);
        for (int64_t k = 0; k < t->size(); ++k) {
          if (r.type == ElementType::kInt64) r.ints.push_back(t->AsInt(k));
          else r.floats.push_back(static_cast<float>(t->AsDouble(k)));
        }
      }
      r.shape = {r.size()};
    } else if (n.op == "Slice") {
      if (a->shape.size() != 1) return NodeError(n, "constant Slice supports 1-D tensors only");
      const int64_t len = a->shape[0];
      int64_t start = C(n, 1)->AsInt(0), end = C(n, 2)->AsInt(0);
      const int64_t step = C(n, 4) ? C(n, 4)->AsInt(0) : 1;
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
      ASSIGN_OR_RETURN(r, FoldBinary(n, *a, *C(n, 1)));
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
      // A float op on constants only (rare): run it at inference like any other node.
      return Infer(n);
    }
    out_->consts[n.outputs[0]] = std::move(r);
    return absl::OkStatus();
  }

  absl::StatusOr<Shape> ViewShape(const Node& n, const Shape& in) {
    if (n.op == "Reshape") {
      const ConstTensor* spec = C(n, 1);
      if (spec == nullptr) return NodeError(n, "target shape must be constant after folding");
      return ReshapeTarget(n, in, *spec);
    }
    if (n.op == "Flatten") {
      ASSIGN_OR_RETURN(int64_t axis, NormAxis(n, n.IntAttr("axis", 1), in.size() + 1));
      int64_t a = 1, b = 1;
      for (int64_t i = 0; i < static_cast<int64_t>(in.size()); ++i) (i < axis ? a : b) *= in[i];
      return Shape{a, b};
    }
    ASSIGN_OR_RETURN(std::vector<int64_t> axes, AxesOf(n, *out_, 1));
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

  absl::Status Set(const Node& n, Shape s) {
    out_->shapes[n.outputs[0]] = std::move(s);
    out_->nodes.push_back(n);
    return absl::OkStatus();
  }

  absl::Status Infer(const Node& n) {
    ASSIGN_OR_RETURN(Shape x, S(n, 0));
    const std::string& op = n.op;
    if (op == "Conv") {
      ASSIGN_OR_RETURN(Shape w, S(n, 1));
      if (x.size() != 4 || w.size() != 4) return NodeError(n, "only 2-D convolutions (4-D tensors) are supported");
      if (!C(n, 1)) return NodeError(n, "weights must be a constant initializer");
      const int64_t group = n.IntAttr("group", 1);
      if (group <= 0 || x[1] != w[1] * group || w[0] % group != 0) {
        return NodeError(n, absl::StrCat("input channels ", x[1], " do not match weights ",
                                         ShapeToString(w), " with group ", group));
      }
      ASSIGN_OR_RETURN(auto p, ConvGeometry(n, x, {w[2], w[3]}));
      return Set(n, {x[0], w[0], p[0], p[1]});
    }
    if (op == "MaxPool" || op == "AveragePool") {
      if (x.size() != 4) return NodeError(n, "only 2-D pooling (4-D tensors) is supported");
      if (n.outputs.size() > 1 && !n.outputs[1].empty()) return NodeError(n, "MaxPool indices output is not supported");
      auto k = n.IntsAttr("kernel_shape");
      if (k.size() != 2) return NodeError(n, "kernel_shape must have 2 values");
      ASSIGN_OR_RETURN(auto p, ConvGeometry(n, x, k));
      return Set(n, {x[0], x[1], p[0], p[1]});
    }
    if (op == "GlobalAveragePool" || op == "GlobalMaxPool") {
      if (x.size() < 3) return NodeError(n, "input rank must be at least 3");
      Shape s = x;
      for (size_t i = 2; i < s.size(); ++i) s[i] = 1;
      return Set(n, s);
    }
    if (op == "BatchNormalization" || op == "InstanceNormalization") {
      if (x.size() < 2) return NodeError(n, "input rank must be at least 2");
      const size_t params = op == "BatchNormalization" ? 5 : 3;
      if (n.inputs.size() < params) return NodeError(n, "missing parameter inputs");
      for (size_t i = 1; i < params; ++i) {
        const ConstTensor* c = C(n, i);
        if (!c) return NodeError(n, absl::StrCat("parameter input ", i, " must be constant"));
        if (c->size() != x[1]) {
          return NodeError(n, absl::StrCat("parameter input ", i, " has ", c->size(), " values for ", x[1], " channels"));
        }
      }
      if (op == "BatchNormalization") {
        if (n.IntAttr("training_mode", 0) != 0) return NodeError(n, "training_mode=1 is not supported for inference");
        for (size_t i = 1; i < n.outputs.size(); ++i) {
          if (!n.outputs[i].empty()) return NodeError(n, "training outputs (running mean/var) are not supported");
        }
      }
      return Set(n, x);
    }
    if (op == "LayerNormalization") {
      ASSIGN_OR_RETURN(int64_t axis, NormAxis(n, n.IntAttr("axis", -1), x.size()));
      int64_t inner = 1;
      for (size_t i = axis; i < x.size(); ++i) inner *= x[i];
      for (int i = 1; i <= 2; ++i) {
        const ConstTensor* c = C(n, i);
        if (i == 1 && !c) return NodeError(n, "scale must be constant");
        if (c && c->size() != inner) {
          return NodeError(n, absl::StrCat("parameter input ", i, " has ", c->size(), " values; expected ", inner));
        }
      }
      for (size_t i = 1; i < n.outputs.size(); ++i) {
        if (!n.outputs[i].empty()) return NodeError(n, "Mean/InvStdDev outputs are not supported");
      }
      return Set(n, x);
    }
    if (op == "Relu" || op == "LeakyRelu" || op == "Sigmoid" || op == "Tanh" || op == "HardSwish" ||
        op == "HardSigmoid" || op == "Sqrt" || op == "Exp" || op == "Abs" || op == "Identity" ||
        op == "Softmax") {
      return Set(n, x);
    }
    if (op == "Dropout") {
      if (n.outputs.size() > 1 && !n.outputs[1].empty()) return NodeError(n, "mask output is not supported");
      return Set(n, x);
    }
    if (op == "Clip") {
      for (int i = 1; i <= 2; ++i) {
        if (i < static_cast<int>(n.inputs.size()) && !n.inputs[i].empty() && !C(n, i)) {
          return NodeError(n, "min/max must be constants");
        }
      }
      return Set(n, x);
    }
    if (op == "Pow") {
      const ConstTensor* e = C(n, 1);
      if (!e || e->size() != 1) return NodeError(n, "exponent must be a scalar constant");
      return Set(n, x);
    }
    if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div") {
      ASSIGN_OR_RETURN(Shape y, S(n, 1));
      auto s = BroadcastShapes(x, y);
      if (!s.ok()) return NodeError(n, std::string(s.status().message()));
      return Set(n, *s);
    }
    if (op == "ReduceMean") {
      ASSIGN_OR_RETURN(std::vector<int64_t> axes, AxesOf(n, *out_, 1));
      const bool keep = n.IntAttr("keepdims", 1) != 0;
      std::vector<bool> red(x.size(), axes.empty());
      for (int64_t a : axes) {
        ASSIGN_OR_RETURN(int64_t k, NormAxis(n, a, x.size()));
        red[k] = true;
      }
      Shape s;
      for (size_t i = 0; i < x.size(); ++i) {
        if (!red[i]) s.push_back(x[i]);
        else if (keep) s.push_back(1);
      }
      return Set(n, s);
    }
    if (op == "Flatten" || op == "Reshape" || op == "Squeeze" || op == "Unsqueeze") {
      ASSIGN_OR_RETURN(Shape s, ViewShape(n, x));
      return Set(n, s);
    }
    if (op == "Gemm") {
      ASSIGN_OR_RETURN(Shape b, S(n, 1));
      if (x.size() != 2 || b.size() != 2) return NodeError(n, "A and B must be 2-D");
      if (n.IntAttr("transA", 0) != 0) return NodeError(n, "transA=1 is not supported");
      const bool tb = n.IntAttr("transB", 0) != 0;
      const int64_t k = tb ? b[1] : b[0], m = tb ? b[0] : b[1];
      if (k != x[1]) {
        return NodeError(n, absl::StrCat("A ", ShapeToString(x), " and B ", ShapeToString(b), " do not multiply"));
      }
      return Set(n, {x[0], m});
    }
    if (op == "MatMul") {
      ASSIGN_OR_RETURN(Shape b, S(n, 1));
      if (x.size() < 2 || b.size() < 2 || x.back() != b[b.size() - 2]) {
        return NodeError(n, absl::StrCat("A ", ShapeToString(x), " and B ", ShapeToString(b), " do not multiply"));
      }
      Shape xa(x.begin(), x.end() - 2), ba(b.begin(), b.end() - 2);
      auto batch = BroadcastShapes(xa, ba);
      if (!batch.ok()) return NodeError(n, std::string(batch.status().message()));
      Shape s = *batch;
      s.push_back(x[x.size() - 2]);
      s.push_back(b.back());
      return Set(n, s);
    }
    if (op == "Concat") {
      ASSIGN_OR_RETURN(int64_t axis, NormAxis(n, n.IntAttr("axis", 0), x.size()));
      Shape s = x;
      for (size_t i = 1; i < n.inputs.size(); ++i) {
        ASSIGN_OR_RETURN(Shape y, S(n, i));
        if (y.size() != x.size()) return NodeError(n, "inputs have different ranks");
        for (size_t d = 0; d < x.size(); ++d) {
          if (static_cast<int64_t>(d) != axis && y[d] != x[d]) {
            return NodeError(n, absl::StrCat("input ", i, " shape ", ShapeToString(y), " does not match ", ShapeToString(x)));
          }
        }
        s[axis] += y[axis];
      }
      return Set(n, s);
    }
    if (op == "Transpose") {
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
      return Set(n, s);
    }
    return NodeError(n, "operator is not supported on runtime tensors");
  }

  // Output spatial dims for Conv / pooling (pads, strides, dilations, auto_pad, ceil_mode).
  absl::StatusOr<std::array<int64_t, 2>> ConvGeometry(const Node& n, const Shape& x, const std::vector<int64_t>& k) {
    auto strides = n.IntsAttr("strides", {1, 1});
    auto dil = n.IntsAttr("dilations", {1, 1});
    auto pads = n.IntsAttr("pads", {0, 0, 0, 0});
    const std::string auto_pad = n.StringAttr("auto_pad", "NOTSET");
    if (strides.size() != 2 || dil.size() != 2 || pads.size() != 4) {
      return NodeError(n, "strides/dilations/pads must have 2/2/4 values");
    }
    if (auto_pad != "NOTSET" && auto_pad != "VALID") {
      return NodeError(n, absl::StrCat("auto_pad=", auto_pad, " is not supported; export with explicit pads"));
    }
    const bool ceil_mode = n.IntAttr("ceil_mode", 0) != 0;
    auto bounded = [&](const char* what, const std::vector<int64_t>& v, int64_t lo) -> absl::Status {
      for (int64_t x : v) {
        if (x < lo || x > kMaxWindowGeometry) {
          return NodeError(n, absl::StrCat(what, " ", x, " is outside [", lo, ", ", kMaxWindowGeometry, "]"));
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
      if (out[i] <= 0) return NodeError(n, absl::StrCat("output spatial dim ", i, " is empty for input ", ShapeToString(x)));
    }
    return out;
  }

  const Graph& g_;
  SpecializedGraph* out_;
};

}  // namespace

absl::Status CheckTensorShape(const std::string& what, const std::vector<int64_t>& shape) {
  int64_t volume = 1;  // product of the non-zero dims
  for (size_t i = 0; i < shape.size(); ++i) {
    const int64_t d = shape[i];
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": dim ", i, " of shape ", ShapeToString(shape), " is negative"));
    }
    if (d != 0 && volume > kMaxTensorElements / d) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": shape ", ShapeToString(shape),
                                                     " has more than the limit of ", kMaxTensorElements,
                                                     " elements"));
    }
    if (d != 0) volume *= d;
  }
  return absl::OkStatus();
}

const std::vector<int64_t>& SpecializedGraph::ShapeOf(const std::string& v) const {
  auto it = shapes.find(v);
  if (it != shapes.end()) return it->second;
  return consts.at(v).shape;
}

absl::StatusOr<std::vector<int64_t>> BroadcastShapes(const std::vector<int64_t>& a,
                                                     const std::vector<int64_t>& b) {
  const size_t r = std::max(a.size(), b.size());
  std::vector<int64_t> out(r);
  for (size_t i = 0; i < r; ++i) {
    const int64_t da = i < r - a.size() ? 1 : a[i - (r - a.size())];
    const int64_t db = i < r - b.size() ? 1 : b[i - (r - b.size())];
    if (da != db && da != 1 && db != 1) {
      return absl::InvalidArgumentError(absl::StrCat("shapes ", ShapeToString(a), " and ",
                                                     ShapeToString(b), " do not broadcast"));
    }
    out[i] = da == 1 ? db : da;
  }
  return out;
}

absl::StatusOr<SpecializedGraph> Specialize(const Graph& graph,
                                            const std::vector<std::vector<int64_t>>& input_shapes) {
  SpecializedGraph out;
  Specializer s(graph, &out);
  RETURN_IF_ERROR(s.Run(input_shapes));
  return out;
}

std::vector<std::vector<int64_t>> InputShapesFor(const Graph& graph, int64_t batch, int64_t fill) {
  std::vector<std::vector<int64_t>> shapes;
  for (const ValueSpec& in : graph.inputs) {
    std::vector<int64_t> s = in.shape;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] < 0) s[i] = i == 0 ? batch : fill;
    }
    shapes.push_back(std::move(s));
  }
  return shapes;
}

}  // namespace normserve
