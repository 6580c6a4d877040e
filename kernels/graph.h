// The engine's graph IR: ONNX nodes with typed attributes and constant tensors, decoupled
// from the ONNX protobuf classes so passes and the planner never touch protobuf.
#ifndef NORMSERVE_KERNELS_GRAPH_H_
#define NORMSERVE_KERNELS_GRAPH_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace normserve {

enum class ElementType { kFloat32, kInt64 };

const char* ElementTypeName(ElementType t);

// A constant (initializer, Constant node or folded value). Integer tensors are shape
// arithmetic (Shape/Gather/Concat chains) and live in `ints`; float ones in `floats`.
struct ConstTensor {
  ElementType type = ElementType::kFloat32;
  std::vector<int64_t> shape;
  std::vector<float> floats;
  std::vector<int64_t> ints;

  int64_t size() const;
  // Element i as double / int64 whatever the type.
  double AsDouble(int64_t i) const;
  int64_t AsInt(int64_t i) const;
};

struct Attribute {
  enum class Kind { kInt, kFloat, kInts, kFloats, kString, kTensor };
  Kind kind = Kind::kInt;
  int64_t i = 0;
  float f = 0;
  std::vector<int64_t> ints;
  std::vector<float> floats;
  std::string s;
  ConstTensor t;
};

struct Node {
  std::string name;  // unique within the graph
  std::string op;
  std::vector<std::string> inputs;  // "" for an omitted optional input
  std::vector<std::string> outputs;
  absl::flat_hash_map<std::string, Attribute> attrs;

  bool HasAttr(const std::string& key) const { return attrs.contains(key); }
  int64_t IntAttr(const std::string& key, int64_t dflt) const;
  float FloatAttr(const std::string& key, float dflt) const;
  std::vector<int64_t> IntsAttr(const std::string& key, std::vector<int64_t> dflt = {}) const;
  std::string StringAttr(const std::string& key, std::string dflt = "") const;
};

// A graph input or output: -1 marks a dynamic dim (e.g. the batch).
struct ValueSpec {
  std::string name;
  ElementType type = ElementType::kFloat32;
  std::vector<int64_t> shape;
};

struct Graph {
  std::vector<Node> nodes;  // topologically sorted (checked at import)
  absl::flat_hash_map<std::string, ConstTensor> initializers;
  std::vector<ValueSpec> inputs;  // excluding initializers
  std::vector<ValueSpec> outputs;
};

// The nodes `roots` depend on: walks from each value to the node producing it and on
// through that node's inputs, stopping at initializers and at values for which
// `is_source` returns true (called once per value reached). Returns one flag per node.
// A value with no producer that is not a source is left alone; the first such value
// goes to `*unproduced` when given.
std::vector<bool> NodesFeeding(const Graph& graph, const std::vector<std::string>& roots,
                               const std::function<bool(const std::string&)>& is_source,
                               std::string* unproduced = nullptr);

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_GRAPH_H_
