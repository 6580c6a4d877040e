// oneDNN's channel-blocked activation layout for kernel tests: [N][ceil(C/b)][S][b] float32
// (nChw16c / nChw8c; b = C is channels-last, b = 1 plain NCHW).
#ifndef NORMSERVE_TESTS_KERNELS_BLOCKED_LAYOUT_H_
#define NORMSERVE_TESTS_KERNELS_BLOCKED_LAYOUT_H_

#include <cstdint>
#include <vector>

namespace normserve {

inline int64_t BlockedIndex(int64_t n, int64_t c, int64_t s, int64_t channels, int64_t spatial,
                            int64_t block) {
  const int64_t blocks = (channels + block - 1) / block;
  return ((n * blocks + c / block) * spatial + s) * block + c % block;
}

// Plain [N][C][S] to blocked; the padding channels of the last block hold `pad`.
inline std::vector<float> ToBlocked(const std::vector<float>& plain, int64_t batch,
                                    int64_t channels, int64_t spatial, int64_t block, float pad) {
  const int64_t blocks = (channels + block - 1) / block;
  std::vector<float> out(batch * blocks * spatial * block, pad);
  for (int64_t n = 0; n < batch; ++n)
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t s = 0; s < spatial; ++s)
        out[BlockedIndex(n, c, s, channels, spatial, block)] =
            plain[(n * channels + c) * spatial + s];
  return out;
}

}  // namespace normserve

#endif  // NORMSERVE_TESTS_KERNELS_BLOCKED_LAYOUT_H_
