// Chooses, per 3x3 stride-1 convolution, between oneDNN's direct and Winograd
// implementations by timing both once at compile time. Winograd does 2.25x (F(2,3)) to
// 4x (F(4,3)) fewer multiplications but is not faster for every shape (measured on 2
// cores: 64 channels at 56x56 ran slower, 256 at 14x14 faster), and it wants a blocked
// layout where the direct kernels pick channels-last, so its reorders are timed with it.
#ifndef NORMSERVE_KERNELS_CONV_ALGORITHM_CHOICE_H_
#define NORMSERVE_KERNELS_CONV_ALGORITHM_CHOICE_H_

#include <string>

#include "dnnl.hpp"

namespace normserve {

// Whether oneDNN 2.6 has a Winograd kernel for this shape at all: 3x3, stride 1, no
// dilation, no groups.
bool WinogradApplies(const dnnl::memory::dims& weights, const dnnl::memory::dims& strides,
                     const dnnl::memory::dims& dilates, int64_t groups);

// True when `winograd`, plus reorders between its layouts and `direct`'s for source and
// destination, is faster than `direct` by a margin (best of several interleaved runs, on
// the calling thread's OpenMP threads). Both must describe the same convolution and use
// a user scratchpad. Decided once per `signature` (shapes, strides, pads, post-ops,
// bias) and thread count for the process, so every compile agrees.
bool WinogradIsFaster(const std::string& signature,
                      const dnnl::convolution_forward::primitive_desc& direct,
                      const dnnl::convolution_forward::primitive_desc& winograd);

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_CONV_ALGORITHM_CHOICE_H_
