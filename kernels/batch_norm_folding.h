// Folding of frozen BatchNormalization into the preceding convolution or linear layer:
// W'[o] = W[o] * g[o] / sqrt(var[o] + eps), b'[o] = (b[o] - mean[o]) * g[o] / sqrt(var[o] + eps) +
// beta[o] computed in float64, so inference runs one primitive instead of two.
#ifndef NORMSERVE_KERNELS_BATCH_NORM_FOLDING_H_
#define NORMSERVE_KERNELS_BATCH_NORM_FOLDING_H_

#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "kernels/specialize.h"

namespace normserve {

struct BnParams {
  std::vector<float> scale, bias, mean, var;
  float epsilon = 1e-5f;
};

// Folds BN into weights laid out with the output channel outermost ([O, ...]): `weights`
// has O * per_output values; `bias` (O values, zeros if the layer had none) is updated.
void FoldBatchNormIntoWeights(const BnParams& bn, std::vector<float>* weights,
                              std::vector<float>* bias);

// Rewrites g: every BN whose input comes only from a Conv, a Gemm or a MatMul with
// constant 2-D weights is folded into it, except layers named in `keep` (observed layers
// must stay visible to the statistics hooks). Gemm/MatMul become Gemm with transB=1.
absl::Status FoldBatchNorms(SpecializedGraph* g, const absl::flat_hash_set<std::string>& keep);

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_BATCH_NORM_FOLDING_H_
