#include "kernels/gelu_fusion.h"

#include <cmath>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"

namespace normserve {
namespace {

class Matcher {
 public:
  explicit Matcher(const SpecializedGraph& g) : g_(g) {
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      for (const auto& in : g.nodes[i].inputs) consumers_[in].push_back(static_cast<int>(i));
      for (const auto& o : g.nodes[i].outputs) producer_[o] = static_cast<int>(i);
    }
    for (const auto& o : g.outputs) outputs_.insert(o.name);
  }

  // The node reading `v` when it is v's only reader and `v` is not a graph output, else -1.
  int SoleReader(const std::string& v) const {
    auto it = consumers_.find(v);
    if (it == consumers_.end() || it->second.size() != 1 || outputs_.contains(v)) return -1;
    return it->second[0];
  }
  int Producer(const std::string& v) const {
    auto it = producer_.find(v);
    return it == producer_.end() ? -1 : it->second;
  }
  // True when `v` is a one-element float constant within 1e-5 relative of `want` (the
  // exporter writes float32 roundings of sqrt 2, sqrt(2/pi)...).
  bool IsScalar(const std::string& v, double want) const {
    auto it = g_.consts.find(v);
    if (it == g_.consts.end() || it->second.size() != 1 || it->second.type != ElementType::kFloat32)
      return false;
    return std::fabs(it->second.AsDouble(0) - want) <= 1e-5 * std::fabs(want);
  }
  // For a two-input node with one input `v`: the other input (v itself for Mul(v, v)).
  static const std::string* Other(const Node& n, const std::string& v) {
    if (n.inputs.size() != 2) return nullptr;
    if (n.inputs[0] == v) return &n.inputs[1];
    if (n.inputs[1] == v) return &n.inputs[0];
    return nullptr;
  }
  const Node& node(int i) const { return g_.nodes[i]; }
  // Node i is `op` with one operand `v` and the other a scalar `want`.
  bool IsScalarOp(int i, const char* op, const std::string& v, double want) const {
    if (i < 0 || node(i).op != op) return false;
    const std::string* o = Other(node(i), v);
    return o != nullptr && IsScalar(*o, want);
  }

 private:
  const SpecializedGraph& g_;
  absl::flat_hash_map<std::string, std::vector<int>> consumers_;
  absl::flat_hash_map<std::string, int> producer_;
  absl::flat_hash_set<std::string> outputs_;
};

// From `t` (erf(x/sqrt 2) or tanh(...), produced by node `t_node`) to the chain's end:
// Add(t, 1), then x * bracket * 0.5 in one of the orders the header lists. Appends the
// matched node indices to `chain` and returns the last one, or -1.
int MatchTail(const Matcher& m, const std::string& x, int t_node, std::vector<int>* chain) {
  const std::string& t = m.node(t_node).outputs[0];
  const int add = m.SoleReader(t);
  if (!m.IsScalarOp(add, "Add", t, 1.0)) return -1;
  const std::string& bracket = m.node(add).outputs[0];
  const int next = m.SoleReader(bracket);
  if (next < 0 || m.node(next).op != "Mul") return -1;
  const std::string* other = Matcher::Other(m.node(next), bracket);
  if (other == nullptr) return -1;
  chain->push_back(add);
  chain->push_back(next);
  const std::string& v = m.node(next).outputs[0];
  if (*other == x) {
    // (x * bracket) * 0.5
    const int half = m.SoleReader(v);
    if (!m.IsScalarOp(half, "Mul", v, 0.5)) return -1;
    chain->push_back(half);
    return half;
  }
  if (m.IsScalar(*other, 0.5)) {
    // x * (bracket * 0.5)
    const int outer = m.SoleReader(v);
    if (outer < 0 || m.node(outer).op != "Mul") return -1;
    const std::string* o = Matcher::Other(m.node(outer), v);
    if (o == nullptr || *o != x) return -1;
    chain->push_back(outer);
    return outer;
  }
  // (x * 0.5) * bracket
  const int half = m.Producer(*other);
  if (!m.IsScalarOp(half, "Mul", x, 0.5) || m.SoleReader(*other) != next) return -1;
  chain->push_back(half);
  return next;
}

// Div(x, sqrt 2) or Mul(x, 1/sqrt 2) feeding Erf node `e`: x, or "" when it is not one.
std::string ErfInput(const Matcher& m, int e, std::vector<int>* chain) {
  const std::string& d = m.node(e).inputs[0];
  const int p = m.Producer(d);
  if (p < 0 || m.SoleReader(d) != e) return "";
  const Node& s = m.node(p);
  if (s.op == "Div" && s.inputs.size() == 2 && m.IsScalar(s.inputs[1], std::sqrt(2.0))) {
    chain->push_back(p);
    return s.inputs[0];
  }
  if (s.op == "Mul" && s.inputs.size() == 2) {
    for (int k = 0; k < 2; ++k) {
      if (m.IsScalar(s.inputs[1 - k], 1.0 / std::sqrt(2.0))) {
        chain->push_back(p);
        return s.inputs[k];
      }
    }
  }
  return "";
}

// Mul(sqrt(2/pi), Add(x, Mul(0.044715, x^3))) feeding Tanh node `t`: x, or "".
std::string TanhInput(const Matcher& m, int t, std::vector<int>* chain) {
  const std::string& u = m.node(t).inputs[0];
  const int scale = m.Producer(u);
  if (scale < 0 || m.SoleReader(u) != t || m.node(scale).op != "Mul" ||
      m.node(scale).inputs.size() != 2)
    return "";
  const double k = std::sqrt(2.0 / M_PI);
  const Node& sn = m.node(scale);
  const std::string& inner = m.IsScalar(sn.inputs[0], k) ? sn.inputs[1] : sn.inputs[0];
  if (!m.IsScalarOp(scale, "Mul", inner, k)) return "";
  const int add = m.Producer(inner);
  if (add < 0 || m.SoleReader(inner) != scale || m.node(add).op != "Add" ||
      m.node(add).inputs.size() != 2)
    return "";
  // Add(x, c * x^3): try each operand as x.
  for (int side = 0; side < 2; ++side) {
    const std::string& x = m.node(add).inputs[side];
    const std::string& cubic = m.node(add).inputs[1 - side];
    const int cm = m.Producer(cubic);
    if (cm < 0 || m.SoleReader(cubic) != add || m.node(cm).op != "Mul" ||
        m.node(cm).inputs.size() != 2)
      continue;
    const Node& cmn = m.node(cm);
    const std::string& cube = m.IsScalar(cmn.inputs[0], 0.044715) ? cmn.inputs[1] : cmn.inputs[0];
    if (!m.IsScalarOp(cm, "Mul", cube, 0.044715)) continue;
    const int c3 = m.Producer(cube);
    if (c3 < 0 || m.SoleReader(cube) != cm) continue;
    std::vector<int> found = {scale, add, cm, c3};
    const Node& c3n = m.node(c3);
    if (c3n.op == "Pow" && c3n.inputs.size() == 2 && c3n.inputs[0] == x &&
        m.IsScalar(c3n.inputs[1], 3.0)) {
      chain->insert(chain->end(), found.begin(), found.end());
      return x;
    }
    // Mul(x, Mul(x, x)) in either order.
    const std::string* sq = c3n.op == "Mul" ? Matcher::Other(c3n, x) : nullptr;
    if (sq == nullptr) continue;
    const int c2 = m.Producer(*sq);
    if (c2 < 0 || m.SoleReader(*sq) != c3 || m.node(c2).op != "Mul" ||
        m.node(c2).inputs.size() != 2 || m.node(c2).inputs[0] != x || m.node(c2).inputs[1] != x) {
      continue;
    }
    found.push_back(c2);
    chain->insert(chain->end(), found.begin(), found.end());
    return x;
  }
  return "";
}

}  // namespace

int FuseGelus(SpecializedGraph* g) {
  std::vector<bool> removed(g->nodes.size(), false);
  std::vector<std::pair<int, Node>> replacements;
  {
    const Matcher m(*g);
    for (size_t i = 0; i < g->nodes.size(); ++i) {
      const Node& n = g->nodes[i];
      if ((n.op != "Erf" && n.op != "Tanh") || n.inputs.size() != 1) continue;
      std::vector<int> chain = {static_cast<int>(i)};
      const std::string x = n.op == "Erf" ? ErfInput(m, i, &chain) : TanhInput(m, i, &chain);
      if (x.empty() || g->IsConst(x)) continue;
      const int last = MatchTail(m, x, i, &chain);
      if (last < 0) continue;
      bool taken = false;
      for (int c : chain) taken |= removed[c];
      if (taken) continue;
      for (int c : chain) removed[c] = true;
      Node gelu;
      gelu.name = absl::StrCat(n.name, "/gelu");
      gelu.op = "Gelu";
      Attribute approximate;
      approximate.kind = Attribute::Kind::kString;
      approximate.s = n.op == "Erf" ? "none" : "tanh";
      gelu.attrs["approximate"] = approximate;
      gelu.inputs = {x};
      gelu.outputs = {g->nodes[last].outputs[0]};
      replacements.push_back({last, std::move(gelu)});
    }
  }
  // The Gelu takes the place of the chain's last node: x exists before it, and every
  // reader of the result comes after it.
  for (auto& [index, gelu] : replacements) {
    g->nodes[index] = std::move(gelu);
    removed[index] = false;
  }
  std::vector<Node> kept;
  for (size_t i = 0; i < g->nodes.size(); ++i) {
    if (!removed[i]) kept.push_back(std::move(g->nodes[i]));
  }
  g->nodes = std::move(kept);
  return static_cast<int>(replacements.size());
}

}  // namespace normserve
