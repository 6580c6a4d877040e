// An observed BatchNormalization in one pass over memory: the per-sample float64 moments
// of its input (what a training session accumulates) and its frozen affine followed by a
// clamp (ReLU, ReLU6, Clip), read and written in the layout the producing convolution chose.
#ifndef NORMSERVE_KERNELS_OBSERVED_BATCH_NORM_H_
#define NORMSERVE_KERNELS_OBSERVED_BATCH_NORM_H_

#include <cstdint>
#include <limits>
#include <vector>

#include "kernels/channel_moments.h"

namespace normserve {

// [batch][ceil(channels / block)][spatial][block] float32: oneDNN's nChw16c / nChw8c
// (padded channels are not read and are written as 0), channels-last with block = channels,
// plain NCHW with block = 1.
struct ObservedBatchNormShape {
  int64_t batch = 1;
  int64_t channels = 1;
  int64_t spatial = 1;
  int64_t block = 1;
};

// y = min(max((x - mean[c]) * scale[c] + shift[c], lo), hi) in float32, scale being
// gamma / sqrt(var + epsilon) (oneDNN's inference batch norm computes the same expression).
struct BatchNormAffine {
  std::vector<float> mean, scale, shift;  // [channels]
  float lo = -std::numeric_limits<float>::infinity();
  float hi = std::numeric_limits<float>::infinity();
};

// Fills `dst` (same layout as `src`; either `src` itself, every value being read before it
// is overwritten, or a buffer not overlapping it) and returns one ChannelMoments per sample
// of `src`.
//
// Moments: the spatial extent of a sample's channel is cut into segments of a fixed number
// of values and each segment into tiles small enough for L1; a tile's mean and M2 are
// exact two-pass sums over its rows (the second pass, which also writes dst, reads from
// L1), and tiles then segments are merged in spatial order with Chan, Golub & LeVeque's
// pairwise update (1979), which is as stable as a two-pass over the whole channel. The
// cuts depend on the shape only, and no value is contracted into an FMA (the file is
// built with -ffp-contract=off), so results do not depend on the thread count or the
// vector ISA.
//
// `isa` picks one of the kernel's vector copies (kAuto: the widest this CPU runs); they
// give the same bits, which tests check through it.
enum class KernelIsa { kAuto, kBaseline, kAvx2, kAvx512 };
bool CpuRuns(KernelIsa isa);
std::vector<ChannelMoments> ObservedBatchNormForward(const ObservedBatchNormShape& shape,
                                                     const float* src,
                                                     const BatchNormAffine& affine, float* dst,
                                                     KernelIsa isa = KernelIsa::kAuto);

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_OBSERVED_BATCH_NORM_H_
