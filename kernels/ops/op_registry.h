// The one table from ONNX operator type to its shape function and its lowering, both in
// kernels/ops/<family>.cc. Adding an operator: the two functions in its family's file (or
// a new file, listed in kernels/CMakeLists.txt), their declarations and one table line in
// op_registry.cc.
#ifndef NORMSERVE_KERNELS_OPS_OP_REGISTRY_H_
#define NORMSERVE_KERNELS_OPS_OP_REGISTRY_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "kernels/lowering_context.h"
#include "kernels/post_op_fusion.h"
#include "kernels/shape_inference.h"

namespace normserve {

// Lowers one node (with the post-ops fused into it) into steps of ctx.plan(), and
// defines f.output. A failure need not name the node: the caller prefixes it. A thrown
// dnnl::error is caught by the caller and becomes InvalidArgument naming the node.
using OpLowering = absl::Status (*)(const FusedNode& f, LoweringContext& ctx);
using MultiShapeFunction = absl::StatusOr<std::vector<Shape>> (*)(const Node& n,
                                                                  const ShapeContext& ctx);

struct OpFunctions {
  // Output shape on runtime inputs; nullptr for ops that only a graph pass creates
  // (GroupNorm), never seen by specialization.
  ShapeFunction infer = nullptr;
  OpLowering lower = nullptr;
  // Shapes of every output, for ops with several (Split); `infer` gives the first.
  MultiShapeFunction infer_outputs = nullptr;
};

// The functions of `op`, or nullptr when the engine does not run it on runtime tensors.
const OpFunctions* FindOp(const std::string& op);

// An observed BatchNormalization: the per-sample channel moments of its input, then (when
// `output_needed`) the layer with its fused activation; lives in ops/normalization.cc.
absl::Status LowerObservedBatchNorm(const FusedNode& f, bool output_needed, LoweringContext& ctx);

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_OPS_OP_REGISTRY_H_
