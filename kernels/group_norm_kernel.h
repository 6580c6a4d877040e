// Group (and instance) normalization with a per-channel affine and an optional ReLU, in
// one kernel. oneDNN 2.6 has no group normalization primitive; composing it from layer
// normalization and a reference batch normalization costs two extra passes and a
// reorder on each side of every GroupNorm, because those primitives want a plain layout
// while the convolutions around them pick channels-last. This kernel works in either
// layout, so the tensor stays in the convolution's layout.
#ifndef NORMSERVE_KERNELS_GROUP_NORM_KERNEL_H_
#define NORMSERVE_KERNELS_GROUP_NORM_KERNEL_H_

#include <cstdint>

namespace normserve {

struct GroupNormShape {
  int64_t batch = 1;
  int64_t channels = 1;
  int64_t spatial = 1;  // product of the dims after the channel dim
  int64_t groups = 1;   // divides channels
  // Layout of src and dst: [N, spatial, C] when true, [N, C, spatial] when false.
  bool channels_last = false;
};

// dst = relu?((src - mean_g) / sqrt(var_g + epsilon) * gamma_c + beta_c), with mean_g and
// the biased var_g over the C/G channels and all spatial positions of each sample and
// group, accumulated in float64. Parallel over the calling thread's OpenMP threads.
// src and dst must not overlap.
void GroupNormForward(const GroupNormShape& shape, const float* src, const float* gamma,
                      const float* beta, float epsilon, bool relu, float* dst);

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_GROUP_NORM_KERNEL_H_
