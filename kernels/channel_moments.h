// Per-sample, per-channel moments of an activation in float64: what BN statistics are
// accumulated from (statistics hooks of an observed plan, layer-wise calibration).
#ifndef NORMSERVE_KERNELS_CHANNEL_MOMENTS_H_
#define NORMSERVE_KERNELS_CHANNEL_MOMENTS_H_

#include <cstdint>
#include <vector>

namespace normserve {

struct ChannelMoments {
  int64_t count = 0;         // values per channel (H*W for NCHW, 1 for N x C)
  std::vector<double> mean;  // [C]
  std::vector<double> m2;    // [C], sum of squared deviations from mean
};

// One ChannelMoments per sample of a plain [batch, channels, spatial...] float32 tensor.
// Two passes (mean, then squared deviations): a one-pass sum of squares cancels badly for
// activations whose mean is large against their spread. Channels run in parallel on the
// caller's OpenMP threads; each channel's sums run in a fixed order (8 interleaved
// partial sums, channel_moments.cc), so results do not depend on the thread count.
std::vector<ChannelMoments> ChannelMomentsOf(const float* data, int64_t batch, int64_t channels,
                                             int64_t spatial);

// The same moments of a tensor whose channels are interleaved in blocks of `block`:
// [batch][ceil(channels / block)][spatial][block] (oneDNN's nChw16c / nChw8c, padded
// channels ignored); channels-last [batch][spatial][channels] is block = channels. Read
// where the producing convolution wrote it, without a reorder to the plain layout: the
// channels of a block are the SIMD lanes, each channel's sums run in spatial order, so
// results do not depend on the thread count (they may differ from the plain layout's in
// the last bits: another summation order).
std::vector<ChannelMoments> BlockedChannelMomentsOf(const float* data, int64_t batch,
                                                    int64_t channels, int64_t spatial,
                                                    int64_t block);

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_CHANNEL_MOMENTS_H_
