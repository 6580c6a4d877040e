// Static shape inference for nodes on runtime tensors: what a shape function (one per
// operator family, in kernels/ops/<family>.cc, registered in kernels/ops/op_registry.cc)
// can see, and the helpers ONNX shape rules share (axes, views, window geometry).
#ifndef NORMSERVE_KERNELS_SHAPE_INFERENCE_H_
#define NORMSERVE_KERNELS_SHAPE_INFERENCE_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/graph.h"
#include "kernels/specialize.h"

namespace normserve {

using Shape = std::vector<int64_t>;

// What specialization knows so far: constants and the shapes of runtime values produced
// by earlier nodes. Every shape it returns has passed CheckTensorShape, so products of
// its dims do not overflow.
class ShapeContext {
 public:
  explicit ShapeContext(const SpecializedGraph& g) : g_(g) {}
  // Input i of `n` when it is present and constant, else nullptr.
  const ConstTensor* Const(const Node& n, int i) const;
  // Shape of input i of `n` (runtime or constant), or an error naming the node.
  absl::StatusOr<Shape> InputShape(const Node& n, int i) const;

 private:
  const SpecializedGraph& g_;
};

// The output shape of `n` (its first output) on runtime inputs; errors name the node.
using ShapeFunction = absl::StatusOr<Shape> (*)(const Node& n, const ShapeContext& ctx);

// InvalidArgument "node "<name>" (<op>): <why>".
absl::Status NodeError(const Node& n, const std::string& why);
// `axis` in [-rank, rank) made non-negative.
absl::StatusOr<int64_t> NormAxis(const Node& n, int64_t axis, int64_t rank);
// The "axes" attribute, or (opset 13+) the constant input `input_index`; empty if neither.
absl::StatusOr<std::vector<int64_t>> AxesOf(const Node& n, const ShapeContext& ctx,
                                            int input_index);
// Output shape of Flatten/Reshape/Squeeze/Unsqueeze applied to `in` (runtime or constant).
absl::StatusOr<Shape> ViewShape(const Node& n, const ShapeContext& ctx, const Shape& in);
// Output spatial dims of a 2-D Conv / pooling window `kernel` over x [N, C, H, W], with
// strides, dilations, pads, auto_pad and ceil_mode from `n`, all bounded by
// kMaxWindowGeometry before any arithmetic.
absl::StatusOr<std::array<int64_t, 2>> WindowOutputDims(const Node& n, const Shape& x,
                                                        const std::vector<int64_t>& kernel);
// Shape functions several families share.
absl::StatusOr<Shape> SameShapeAsInput(const Node& n, const ShapeContext& ctx);
absl::StatusOr<Shape> BroadcastInputShapes(const Node& n, const ShapeContext& ctx);

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_SHAPE_INFERENCE_H_
