#include "kernels/post_op_fusion.h"

#include <limits>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"

namespace normserve {

bool IsActivationOp(const std::string& op) {
  return op == "Relu" || op == "LeakyRelu" || op == "Clip" || op == "Sigmoid" || op == "Tanh" ||
         op == "HardSwish" || op == "HardSigmoid" || op == "Sqrt" || op == "Exp" || op == "Abs" ||
         op == "Pow" || op == "Neg" || op == "Reciprocal" || op == "Gelu";
}

absl::StatusOr<std::vector<Activation>> ActivationOf(const Node& n, const SpecializedGraph& g) {
  using A = dnnl::algorithm;
  auto scalar = [&](int i, float dflt) {
    if (i >= static_cast<int>(n.inputs.size()) || n.inputs[i].empty()) return dflt;
    const ConstTensor& c = g.consts.at(n.inputs[i]);
    return c.size() > 0 ? static_cast<float>(c.AsDouble(0)) : dflt;
  };
  const std::string& op = n.op;
  if (op == "Relu") return std::vector<Activation>{{A::eltwise_relu, 0.f, 0.f}};
  if (op == "LeakyRelu")
    return std::vector<Activation>{{A::eltwise_relu, n.FloatAttr("alpha", 0.01f), 0.f}};
  if (op == "Sigmoid") return std::vector<Activation>{{A::eltwise_logistic, 0.f, 0.f}};
  if (op == "Tanh") return std::vector<Activation>{{A::eltwise_tanh, 0.f, 0.f}};
  if (op == "HardSwish") return std::vector<Activation>{{A::eltwise_hardswish, 0.f, 0.f}};
  if (op == "Sqrt") return std::vector<Activation>{{A::eltwise_sqrt, 0.f, 0.f}};
  if (op == "Exp") return std::vector<Activation>{{A::eltwise_exp, 0.f, 0.f}};
  if (op == "Abs") return std::vector<Activation>{{A::eltwise_abs, 0.f, 0.f}};
  if (op == "Pow") return std::vector<Activation>{{A::eltwise_pow, 1.f, scalar(1, 1.f)}};
  if (op == "Neg") return std::vector<Activation>{{A::eltwise_linear, -1.f, 0.f}};
  if (op == "Reciprocal") return std::vector<Activation>{{A::eltwise_pow, 1.f, -1.f}};
  if (op == "Gelu") {
    // ONNX Gelu (opset 20), also what gelu_fusion.h makes of PyTorch's exported formula.
    const std::string approximate = n.StringAttr("approximate", "none");
    if (approximate == "none") return std::vector<Activation>{{A::eltwise_gelu_erf, 0.f, 0.f}};
    if (approximate == "tanh") return std::vector<Activation>{{A::eltwise_gelu_tanh, 0.f, 0.f}};
    return absl::InvalidArgumentError(absl::StrCat("node \"", n.name, "\" (Gelu): approximate \"",
                                                   approximate.substr(0, 32),
                                                   "\" is not supported (none, tanh)"));
  }
  if (op == "HardSigmoid") {
    return std::vector<Activation>{
        {A::eltwise_linear, n.FloatAttr("alpha", 0.2f), n.FloatAttr("beta", 0.5f)},
        {A::eltwise_clip, 0.f, 1.f}};
  }
  if (op == "Clip") {
    float lo = -std::numeric_limits<float>::max(), hi = std::numeric_limits<float>::max();
    if (n.HasAttr("min") || n.HasAttr("max")) {  // opset < 11
      lo = n.FloatAttr("min", lo);
      hi = n.FloatAttr("max", hi);
    } else {
      lo = scalar(1, lo);
      hi = scalar(2, hi);
    }
    if (lo == 0.f && hi == std::numeric_limits<float>::max()) {
      return std::vector<Activation>{{A::eltwise_relu, 0.f, 0.f}};
    }
    return std::vector<Activation>{{A::eltwise_clip, lo, hi}};
  }
  return absl::InvalidArgumentError(
      absl::StrCat("node \"", n.name, "\" (", op, ") is not an activation"));
}

std::vector<FusedNode> FusePostOps(const SpecializedGraph& g, bool enable) {
  absl::flat_hash_map<std::string, std::vector<size_t>> consumers;
  absl::flat_hash_map<std::string, int> producer;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    for (const auto& in : g.nodes[i].inputs) consumers[in].push_back(i);
    for (const auto& o : g.nodes[i].outputs) producer[o] = static_cast<int>(i);
  }
  absl::flat_hash_map<std::string, bool> is_output;
  for (const auto& o : g.outputs) is_output[o.name] = true;
  auto single = [&](const std::string& v) -> int {
    auto it = consumers.find(v);
    if (it == consumers.end() || it->second.size() != 1 || is_output.contains(v)) return -1;
    return static_cast<int>(it->second[0]);
  };

  std::vector<bool> absorbed(g.nodes.size(), false);
  std::vector<FusedNode> out;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    if (absorbed[i]) continue;
    FusedNode f;
    f.node = g.nodes[i];
    f.output = f.node.outputs[0];
    const std::string& op = f.node.op;
    const bool compute = op == "Conv" || op == "Gemm" || op == "MatMul" || op == "Add" ||
                         op == "Sub" || op == "Mul" || op == "Div";
    const bool norm =
        op == "BatchNormalization" || op == "GroupNorm" || op == "InstanceNormalization";
    if (enable && (compute || norm)) {
      while (true) {
        const int j = single(f.output);
        if (j < 0) break;
        const Node& c = g.nodes[j];
        if (norm) {
          // oneDNN's fuse_norm_relu flag takes a plain ReLU only; a batch norm also takes a
          // Clip (ReLU6), which an observed one applies in its own kernel
          // (observed_batch_norm.h) and an unobserved one as an eltwise after it.
          if (!f.post_ops.empty()) break;
          if (c.op == "Relu") {
            f.post_ops.push_back({false, {dnnl::algorithm::eltwise_relu, 0.f, 0.f}});
          } else if (c.op == "Clip" && op == "BatchNormalization") {
            auto acts = ActivationOf(c, g);
            if (!acts.ok() || acts->size() != 1) break;
            f.post_ops.push_back({false, (*acts)[0]});
          } else {
            break;
          }
        } else if (IsActivationOp(c.op)) {
          auto acts = ActivationOf(c, g);
          if (!acts.ok()) break;
          for (const auto& a : *acts) f.post_ops.push_back({false, a});
        } else if (c.op == "Add" && op == "Conv" && f.post_ops.empty() && c.inputs.size() == 2) {
          const std::string& other = c.inputs[0] == f.output ? c.inputs[1] : c.inputs[0];
          if (other == f.output || g.IsConst(other)) break;
          if (g.ShapeOf(other) != g.ShapeOf(f.output)) break;
          // The residual must already exist when this convolution runs.
          auto p = producer.find(other);
          if (p != producer.end() && p->second > static_cast<int>(i)) break;
          f.post_ops.push_back({true, {}});
          f.sum_operand = other;
        } else {
          break;
        }
        absorbed[j] = true;
        f.output = c.outputs[0];
      }
    }
    out.push_back(std::move(f));
  }
  return out;
}

}  // namespace normserve
