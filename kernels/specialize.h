// Specialization of a Graph to concrete input shapes: static shape inference for every
// runtime value and constant folding of shape arithmetic (Shape/Gather/Unsqueeze/Concat/
// Slice/Cast chains that PyTorch exports for view/reshape).
#ifndef NORMSERVE_KERNELS_SPECIALIZE_H_
#define NORMSERVE_KERNELS_SPECIALIZE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/graph.h"

namespace normserve {

struct SpecializedGraph {
  std::vector<Node> nodes;  // nodes that run at inference time, topologically sorted
  absl::flat_hash_map<std::string, ConstTensor> consts;           // every constant value
  absl::flat_hash_map<std::string, std::vector<int64_t>> shapes;  // every runtime value
  std::vector<ValueSpec> inputs;                                  // concrete shapes
  std::vector<ValueSpec> outputs;                                 // concrete shapes

  bool IsConst(const std::string& v) const { return consts.contains(v); }
  const std::vector<int64_t>& ShapeOf(const std::string& v) const;
};

// Largest element count of any runtime value or constant. Also bounds every dim and the
// product of the non-zero dims of every shape, so shape arithmetic on checked shapes (a
// Flatten's product, a Reshape's count) cannot overflow int64 even with a zero dim.
constexpr int64_t kMaxTensorElements = int64_t{1} << 32;

// Checks `shape` against kMaxTensorElements: dims >= 0, the product of the non-zero dims
// computed without overflow. `what` names the value in the error (e.g. node "conv1"
// (Conv) output "y").
absl::Status CheckTensorShape(const std::string& what, const std::vector<int64_t>& shape);

// Largest kernel, stride, dilation or pad a convolution or pooling may declare; checked
// before any geometry arithmetic.
constexpr int64_t kMaxWindowGeometry = int64_t{1} << 20;

// One concrete shape per graph input, in graph.inputs order. Each must have the declared
// rank, equal every fixed declared dim and be >= 1 where the declaration is dynamic.
absl::StatusOr<SpecializedGraph> Specialize(const Graph& graph,
                                            const std::vector<std::vector<int64_t>>& input_shapes);

// What a dynamic non-batch dim (e.g. an image's height) becomes when a caller only knows
// a batch size: the ImageNet size the CNNs this server is for are usually trained at.
constexpr int64_t kDefaultDynamicDim = 224;

// Concrete input shapes for `batch`: a dynamic dim 0 becomes `batch`, other dynamic dims
// `fill`; fixed dims (including a fixed dim 0) keep their declared value, so the result
// may not have `batch` rows — callers that need it check shapes[i][0].
std::vector<std::vector<int64_t>> InputShapesFor(const Graph& graph, int64_t batch,
                                                 int64_t fill = kDefaultDynamicDim);

// Numpy-style broadcast of two shapes, or an error.
absl::StatusOr<std::vector<int64_t>> BroadcastShapes(const std::vector<int64_t>& a,
                                                     const std::vector<int64_t>& b);

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_SPECIALIZE_H_
