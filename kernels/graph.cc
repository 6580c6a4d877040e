#include "kernels/graph.h"

#include "absl/container/flat_hash_set.h"

namespace normserve {

const char* ElementTypeName(ElementType t) { return t == ElementType::kFloat32 ? "FP32" : "INT64"; }

int64_t ConstTensor::size() const {
  return type == ElementType::kFloat32 ? static_cast<int64_t>(floats.size())
                                       : static_cast<int64_t>(ints.size());
}

double ConstTensor::AsDouble(int64_t i) const {
  return type == ElementType::kFloat32 ? floats[i] : static_cast<double>(ints[i]);
}

int64_t ConstTensor::AsInt(int64_t i) const {
  return type == ElementType::kFloat32 ? static_cast<int64_t>(floats[i]) : ints[i];
}

int64_t Node::IntAttr(const std::string& key, int64_t dflt) const {
  auto it = attrs.find(key);
  return it == attrs.end() ? dflt : it->second.i;
}

float Node::FloatAttr(const std::string& key, float dflt) const {
  auto it = attrs.find(key);
  return it == attrs.end() ? dflt : it->second.f;
}

std::vector<int64_t> Node::IntsAttr(const std::string& key, std::vector<int64_t> dflt) const {
  auto it = attrs.find(key);
  return it == attrs.end() ? dflt : it->second.ints;
}

std::string Node::StringAttr(const std::string& key, std::string dflt) const {
  auto it = attrs.find(key);
  return it == attrs.end() ? dflt : it->second.s;
}

std::vector<bool> NodesFeeding(const Graph& graph, const std::vector<std::string>& roots,
                               const std::function<bool(const std::string&)>& is_source,
                               std::string* unproduced) {
  absl::flat_hash_map<std::string, size_t> producer;
  for (size_t i = 0; i < graph.nodes.size(); ++i) {
    for (const auto& o : graph.nodes[i].outputs) {
      if (!o.empty()) producer[o] = i;
    }
  }
  std::vector<bool> reached(graph.nodes.size(), false);
  std::vector<std::string> stack(roots.begin(), roots.end());
  absl::flat_hash_set<std::string> seen;
  while (!stack.empty()) {
    const std::string v = std::move(stack.back());
    stack.pop_back();
    if (v.empty() || !seen.insert(v).second || graph.initializers.contains(v) || is_source(v))
      continue;
    auto it = producer.find(v);
    if (it == producer.end()) {
      if (unproduced != nullptr && unproduced->empty()) *unproduced = v;
      continue;
    }
    if (reached[it->second]) continue;
    reached[it->second] = true;
    for (const auto& in : graph.nodes[it->second].inputs) stack.push_back(in);
  }
  return reached;
}

}  // namespace normserve
