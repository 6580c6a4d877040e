#include "kernels/graph.h"

namespace normserve {

const char* ElementTypeName(ElementType t) {
  return t == ElementType::kFloat32 ? "FP32" : "INT64";
}

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

}  // namespace normserve
