// Specialize: runs shape inference (shape_inference.h, per-op functions from the op
// registry) and constant folding (constant_folding.h) over a graph in topological order,
// checking every shape against kMaxTensorElements.
#include "kernels/specialize.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/constant_folding.h"
#include "kernels/ops/op_registry.h"
#include "kernels/shape_inference.h"
#include "kernels/status_macros.h"
#include "kernels/tensor.h"

namespace normserve {
namespace {

ConstTensor MakeInts(Shape shape, std::vector<int64_t> v) {
  ConstTensor c;
  c.type = ElementType::kInt64;
  c.shape = std::move(shape);
  c.ints = std::move(v);
  return c;
}

class Specializer {
 public:
  Specializer(const Graph& g, SpecializedGraph* out) : g_(g), out_(out) {}

  absl::Status Run(const std::vector<std::vector<int64_t>>& input_shapes) {
    if (input_shapes.size() != g_.inputs.size()) {
      return absl::InvalidArgumentError(absl::StrCat("the model has ", g_.inputs.size(),
                                                     " inputs; got ", input_shapes.size(),
                                                     " input shapes"));
    }
    for (const auto& [name, t] : g_.initializers) {
      RETURN_IF_ERROR(CheckTensorShape(absl::StrCat("initializer \"", name, "\""), t.shape));
      out_->consts[name] = t;
    }
    for (size_t k = 0; k < g_.inputs.size(); ++k) {
      const ValueSpec& in = g_.inputs[k];
      const Shape& given = input_shapes[k];
      if (given.size() != in.shape.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("model input \"", in.name, "\" has rank ", in.shape.size(), " (",
                         ShapeToString(in.shape), "); got shape ", ShapeToString(given),
                         " of rank ", given.size()));
      }
      for (size_t i = 0; i < given.size(); ++i) {
        if (given[i] < 1) {
          return absl::InvalidArgumentError(absl::StrCat("model input \"", in.name, "\" dim ", i,
                                                         ": given ", given[i],
                                                         "; dims must be >= 1"));
        }
        if (in.shape[i] >= 0 && in.shape[i] != given[i]) {
          return absl::InvalidArgumentError(absl::StrCat("model input \"", in.name, "\" dim ", i,
                                                         ": declared fixed at ", in.shape[i],
                                                         ", given ", given[i]));
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
        RETURN_IF_ERROR(CheckTensorShape(
            absl::StrCat("node \"", n.name, "\" (", n.op, ") output \"", o, "\""), *s));
      }
    }
    for (const auto& o : g_.outputs) {
      auto it = out_->shapes.find(o.name);
      if (it == out_->shapes.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat("graph output \"", o.name, "\" is a constant; not supported"));
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
  absl::Status Visit(const Node& n) {
    const ShapeContext ctx(*out_);
    if (n.op == "Shape") {
      ASSIGN_OR_RETURN(Shape s, ctx.InputShape(n, 0));
      const int64_t r = s.size();
      int64_t start = n.IntAttr("start", 0), end = n.IntAttr("end", r);
      if (start < 0) start += r;
      if (end < 0) end += r;
      start = std::clamp<int64_t>(start, 0, r);
      end = std::clamp<int64_t>(end, start, r);
      out_->consts[n.outputs[0]] =
          MakeInts({end - start}, Shape(s.begin() + start, s.begin() + end));
      return absl::OkStatus();
    }
    if (AllConst(n)) {
      ASSIGN_OR_RETURN(out_->consts[n.outputs[0]], FoldConstantNode(n, ctx));
      return absl::OkStatus();
    }
    const OpFunctions* op = FindOp(n.op);
    if (op == nullptr || op->infer == nullptr)
      return NodeError(n, "operator is not supported on runtime tensors");
    ASSIGN_OR_RETURN(Shape s, op->infer(n, ctx));
    out_->shapes[n.outputs[0]] = std::move(s);
    if (op->infer_outputs != nullptr) {
      ASSIGN_OR_RETURN(std::vector<Shape> all, op->infer_outputs(n, ctx));
      for (size_t k = 1; k < all.size() && k < n.outputs.size(); ++k)
        out_->shapes[n.outputs[k]] = std::move(all[k]);
    }
    out_->nodes.push_back(n);
    return absl::OkStatus();
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
                                                     " has more than the limit of ",
                                                     kMaxTensorElements, " elements"));
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
