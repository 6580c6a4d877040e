// Specialization of a Graph to concrete input shapes (a batch size): static shape
// inference for every runtime value and constant folding of shape arithmetic
// (Shape/Gather/Unsqueeze/Concat/Slice/Cast chains that PyTorch exports for view/reshape).
#ifndef NORMSERVE_KERNELS_SPECIALIZE_H_
#define NORMSERVE_KERNELS_SPECIALIZE_H_

#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "kernels/graph.h"

namespace normserve {

struct SpecializedGraph {
  std::vector<Node> nodes;  // nodes that run at inference time, topologically sorted
  absl::flat_hash_map<std::string, ConstTensor> consts;             // every constant value
  absl::flat_hash_map<std::string, std::vector<int64_t>> shapes;  // every runtime value
  std::vector<ValueSpec> inputs;   // concrete shapes
  std::vector<ValueSpec> outputs;  // concrete shapes

  bool IsConst(const std::string& v) const { return consts.contains(v); }
  const std::vector<int64_t>& ShapeOf(const std::string& v) const;
};

absl::StatusOr<SpecializedGraph> Specialize(const Graph& graph, int64_t batch);

constexpr int64_t kDefaultDynamicDim = 224;
std::vector<std::vector<int64_t>> InputShapesFor(const Graph& graph, int64_t batch,
                                                 int64_t fill = kDefaultDynamicDim);

// Numpy-style broadcast of two shapes, or an error.
absl::StatusOr<std::vector<int64_t>> BroadcastShapes(const std::vector<int64_t>& a,
                                                     const std::vector<int64_t>& b);

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_SPECIALIZE_H_
