// Evaluation at specialization of nodes whose inputs are all constants (shape arithmetic
// PyTorch exports for view/reshape, small float math on weights), by reference
// implementations on ConstTensor.
#ifndef NORMSERVE_KERNELS_CONSTANT_FOLDING_H_
#define NORMSERVE_KERNELS_CONSTANT_FOLDING_H_

#include <optional>

#include "absl/status/statusor.h"
#include "kernels/graph.h"
#include "kernels/shape_inference.h"

namespace normserve {

// The value of `n`'s first output when every input of `n` is a constant in `ctx`;
// std::nullopt when there is no reference implementation of n.op (the node then runs
// at inference); an error naming the node for invalid constants.
absl::StatusOr<std::optional<ConstTensor>> FoldConstantNode(const Node& n, const ShapeContext& ctx);

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_CONSTANT_FOLDING_H_
