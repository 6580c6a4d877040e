// PyTorch 1.13 exports nn.GroupNorm as Reshape([N,G,-1]) -> InstanceNormalization
// (unit scale, zero bias) -> Reshape(back) -> Mul(gamma) -> Add(beta). This pass
// recognises the chain and replaces it by one synthetic "GroupNorm" node
// (attrs: num_groups, epsilon; inputs: x, gamma[C], beta[C]), run as one normalization.
#ifndef NORMSERVE_KERNELS_GROUP_NORM_FUSION_H_
#define NORMSERVE_KERNELS_GROUP_NORM_FUSION_H_

#include "absl/status/status.h"
#include "kernels/specialize.h"

namespace normserve {

// Returns the number of GroupNorm chains fused.
int FuseGroupNorms(SpecializedGraph* g);

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_GROUP_NORM_FUSION_H_
