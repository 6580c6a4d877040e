// Evaluation at specialization of nodes whose inputs are all constants (shape arithmetic
// PyTorch exports for view/reshape, small float math on weights), by reference
// implementations on ConstTensor.
#ifndef NORMSERVE_KERNELS_CONSTANT_FOLDING_H_
#define NORMSERVE_KERNELS_CONSTANT_FOLDING_H_

#include <string>

#include "absl/status/statusor.h"
#include "kernels/graph.h"
#include "kernels/shape_inference.h"

namespace normserve {

// The value of `n`'s first output when every input of `n` is a constant in `ctx`, so
// that weights transformed in the graph (a do_constant_folding=False export) never reach
// the planner. An error naming the node for invalid constants and for an operator with
// no reference implementation here (the planner cannot run a node on constants).
// Integer results (shape arithmetic, Equal's booleans) are int64, others float32
// computed in double.
absl::StatusOr<ConstTensor> FoldConstantNode(const Node& n, const ShapeContext& ctx);

// Whether FoldConstantNode has a reference implementation of `op`.
bool CanFoldConstant(const std::string& op);

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_CONSTANT_FOLDING_H_
