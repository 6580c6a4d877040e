// Fusion of element-wise activations and residual additions into the producing
// primitive as oneDNN post-ops (Conv -> [sum] -> Relu/Clip/...), and of a Relu after a
// normalization into the normalization itself.
#ifndef NORMSERVE_KERNELS_POST_OP_FUSION_H_
#define NORMSERVE_KERNELS_POST_OP_FUSION_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "dnnl.hpp"
#include "kernels/specialize.h"

namespace normserve {

struct Activation {
  dnnl::algorithm alg = dnnl::algorithm::eltwise_relu;
  float alpha = 0.f;
  float beta = 0.f;
};

struct PostOp {
  bool sum = false;  // dst += residual (dst buffer pre-filled with it)
  Activation act;
};

struct FusedNode {
  Node node;
  std::vector<PostOp> post_ops;
  std::string sum_operand;  // the residual read by a sum post-op
  std::string output;       // value produced once every post-op ran
};

// The oneDNN eltwise chain computing an ONNX activation node (HardSigmoid is two), or an
// error if `n` is not one.
absl::StatusOr<std::vector<Activation>> ActivationOf(const Node& n, const SpecializedGraph& g);
bool IsActivationOp(const std::string& op);

std::vector<FusedNode> FusePostOps(const SpecializedGraph& g, bool enable);

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_POST_OP_FUSION_H_
