#include "kernels/observed_batch_norm.h"

#include <algorithm>

namespace normserve {
namespace {

// A tile is whole rows of a block, about 16 KiB of them but at least kMinTileRows: its sum
// pass reads it from memory a 16-channel chunk at a time, the deviation pass of the chunk
// again from L1. Constants, so results depend on the shape only.
constexpr int64_t kTileValues = 4096;
constexpr int64_t kMinTileRows = 16;
// A task is kSegmentTiles tiles of a group of kGroupChannels channels: enough of them to
// balance two threads on a 14x14 or a wide 7x7 layer.
constexpr int64_t kSegmentTiles = 2;
constexpr int64_t kGroupChannels = 64;

// Count, mean and M2 of a set of values, one per channel of a block.
struct Running {
  double count = 0;
  double* mean;
  double* m2;
};

// Chan, Golub & LeVeque's pairwise update: `acc` becomes the moments of the union of its
// values and `count` values with moments (mean, m2).
__attribute__((always_inline)) inline void Merge(Running* acc, double count, const double* mean,
                                                 const double* m2, int64_t width) {
  if (acc->count == 0) {
    std::copy(mean, mean + width, acc->mean);
    std::copy(m2, m2 + width, acc->m2);
    acc->count = count;
    return;
  }
  const double n = acc->count + count;
  const double w_mean = count / n, w_m2 = acc->count * count / n;
  for (int64_t j = 0; j < width; ++j) {
    const double d = mean[j] - acc->mean[j];
    acc->mean[j] += d * w_mean;
    acc->m2[j] += m2[j] + d * d * w_m2;
  }
  acc->count = n;
}

// One tile's rows [0, rows) (stride `block`) for L channels: their mean and M2 (two passes,
// the second from L1) and the clamped affine written to `out`. Its accumulators stay in
// registers; each lane's operations are the same whatever L, so the cut of a block into
// chunks does not change results.
template <int L>
__attribute__((always_inline)) inline void TileChunk(const float* in, float* out, int64_t rows,
                                                     int64_t block, const float* bn_mean,
                                                     const float* scale, const float* shift,
                                                     float lo, float hi, double* mean,
                                                     double* dev) {
  // Even and odd rows add into separate sums, combined at the end: one running sum per lane
  // is a chain of dependent adds that bounded each pass at an add's latency per row.
  double even[L] = {}, odd[L] = {}, mu[L];
  float m[L], sc[L], sh[L];
  for (int l = 0; l < L; ++l) {
    m[l] = bn_mean[l];
    sc[l] = scale[l];
    sh[l] = shift[l];
  }
  int64_t r = 0;
  for (; r + 2 <= rows; r += 2) {
    const float* p = in + r * block;
    for (int l = 0; l < L; ++l) even[l] += static_cast<double>(p[l]);
    for (int l = 0; l < L; ++l) odd[l] += static_cast<double>(p[block + l]);
  }
  if (r < rows) {
    for (int l = 0; l < L; ++l) even[l] += static_cast<double>(in[r * block + l]);
  }
  const double n = static_cast<double>(rows);
  for (int l = 0; l < L; ++l) {
    mu[l] = (even[l] + odd[l]) / n;
    even[l] = odd[l] = 0;
  }
  // The row is read whole before `out` (which may be `in`) is written.
  auto deviate = [&](int64_t row, double* acc) __attribute__((always_inline)) {
    float x[L];
    for (int l = 0; l < L; ++l) x[l] = in[row * block + l];
    float* o = out + row * block;
    for (int l = 0; l < L; ++l) {
      const double d = static_cast<double>(x[l]) - mu[l];
      acc[l] += d * d;
      const float y = (x[l] - m[l]) * sc[l] + sh[l];
      o[l] = std::min(std::max(y, lo), hi);
    }
  };
  for (r = 0; r + 2 <= rows; r += 2) {
    deviate(r, even);
    deviate(r + 1, odd);
  }
  if (r < rows) deviate(r, even);
  for (int l = 0; l < L; ++l) {
    mean[l] = mu[l];
    dev[l] = even[l] + odd[l];
  }
}

// Rows [r0, r1) of `width` channels (stride `block`) starting at `in` and `out`, followed by
// `pad` padding channels to zero; the moments are merged into `acc` tile by tile. `tmp`
// holds 2 * width doubles. Inlined into one copy per vector ISA below: the channels of a row
// are the vector lanes.
__attribute__((always_inline)) inline void SegmentBody(const float* in, float* out, int64_t r0,
                                                       int64_t r1, int64_t block, int64_t width,
                                                       int64_t pad, int64_t tile_rows,
                                                       const float* bn_mean, const float* scale,
                                                       const float* shift, float lo, float hi,
                                                       double* tmp, Running* acc) {
  double* mean = tmp;
  double* dev = tmp + width;
  for (int64_t t0 = r0; t0 < r1; t0 += tile_rows) {
    const int64_t rows = std::min(r1, t0 + tile_rows) - t0;
    const float* tin = in + t0 * block;
    float* tout = out + t0 * block;
    int64_t j = 0;
#define NORMSERVE_CHUNKS(L)                                                                 \
  for (; j + L <= width; j += L)                                                            \
    TileChunk<L>(tin + j, tout + j, rows, block, bn_mean + j, scale + j, shift + j, lo, hi, \
                 mean + j, dev + j);
    NORMSERVE_CHUNKS(16)
    NORMSERVE_CHUNKS(8)
    NORMSERVE_CHUNKS(4)
    NORMSERVE_CHUNKS(1)
#undef NORMSERVE_CHUNKS
    for (int64_t r = 0; pad > 0 && r < rows; ++r)  // oneDNN's zero padding of the last block
      std::fill(tout + r * block + width, tout + r * block + width + pad, 0.f);
    Merge(acc, static_cast<double>(rows), mean, dev, width);
  }
}

#define NORMSERVE_SEGMENT_PARAMS                                                                  \
  const float *in, float *out, int64_t r0, int64_t r1, int64_t block, int64_t width, int64_t pad, \
      int64_t tile_rows, const float *bn_mean, const float *scale, const float *shift, float lo,  \
      float hi, double *tmp, Running *acc
#define NORMSERVE_SEGMENT_ARGS \
  in, out, r0, r1, block, width, pad, tile_rows, bn_mean, scale, shift, lo, hi, tmp, acc

// The package's baseline is SSE2, where this kernel was compute-bound. Every lane runs the
// same IEEE operations in every copy (no FMA: -ffp-contract=off), so they agree bit for bit.
__attribute__((target("avx512f,avx512dq,avx512vl,avx512bw"))) void SegmentAvx512(
    NORMSERVE_SEGMENT_PARAMS) {
  SegmentBody(NORMSERVE_SEGMENT_ARGS);
}
__attribute__((target("avx2"))) void SegmentAvx2(NORMSERVE_SEGMENT_PARAMS) {
  SegmentBody(NORMSERVE_SEGMENT_ARGS);
}
void SegmentBaseline(NORMSERVE_SEGMENT_PARAMS) { SegmentBody(NORMSERVE_SEGMENT_ARGS); }

using SegmentFn = void (*)(NORMSERVE_SEGMENT_PARAMS);
SegmentFn SegmentFor(KernelIsa isa) {
  switch (isa) {
    case KernelIsa::kAvx512:
      return SegmentAvx512;
    case KernelIsa::kAvx2:
      return SegmentAvx2;
    case KernelIsa::kBaseline:
      return SegmentBaseline;
    case KernelIsa::kAuto:
      break;
  }
  static const SegmentFn widest = CpuRuns(KernelIsa::kAvx512) ? SegmentAvx512
                                  : CpuRuns(KernelIsa::kAvx2) ? SegmentAvx2
                                                              : SegmentBaseline;
  return widest;
}

#undef NORMSERVE_SEGMENT_PARAMS
#undef NORMSERVE_SEGMENT_ARGS

}  // namespace

bool CpuRuns(KernelIsa isa) {
  __builtin_cpu_init();
  switch (isa) {
    case KernelIsa::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw");
    case KernelIsa::kAvx2:
      return __builtin_cpu_supports("avx2");
    default:
      return true;
  }
}

std::vector<ChannelMoments> ObservedBatchNormForward(const ObservedBatchNormShape& shape,
                                                     const float* src,
                                                     const BatchNormAffine& affine, float* dst,
                                                     KernelIsa isa) {
  const int64_t batch = shape.batch, channels = shape.channels, spatial = shape.spatial,
                block = shape.block;
  const int64_t blocks = (channels + block - 1) / block;
  const int64_t groups = (std::min(block, channels) + kGroupChannels - 1) / kGroupChannels;
  const int64_t tile_rows = std::max(kMinTileRows, kTileValues / block);
  const int64_t segment_rows = tile_rows * kSegmentTiles;
  const int64_t segments = (spatial + segment_rows - 1) / segment_rows;
  // Groups innermost: one thread's consecutive tasks cover whole segments.
  const int64_t tasks = batch * blocks * segments * groups;
  // Per task: its segment's mean and M2 for each channel of its group.
  std::vector<double> partial(tasks * 2 * kGroupChannels);
  std::vector<double> counts(tasks);
  const SegmentFn segment = SegmentFor(isa);
#pragma omp parallel for schedule(static) if (batch * channels * spatial >= (int64_t{1} << 15))
  for (int64_t t = 0; t < tasks; ++t) {
    thread_local std::vector<double> tmp;
    tmp.resize(2 * kGroupChannels);
    const int64_t g = t % groups, k = t / groups % segments, b = t / (groups * segments) % blocks,
                  n = t / (groups * segments * blocks);
    const int64_t first = b * block + g * kGroupChannels;  // the group's first channel
    const int64_t width = std::min({kGroupChannels, block - g * kGroupChannels, channels - first});
    // The block's last group writes its padding channels.
    const int64_t pad = g == groups - 1 ? block - g * kGroupChannels - width : 0;
    const int64_t r0 = k * segment_rows, r1 = std::min(spatial, r0 + segment_rows);
    const int64_t offset = (n * blocks + b) * spatial * block + g * kGroupChannels;
    double* p = partial.data() + t * 2 * kGroupChannels;
    Running acc{0, p, p + kGroupChannels};
    segment(src + offset, dst + offset, r0, r1, block, width, pad, tile_rows,
            affine.mean.data() + first, affine.scale.data() + first, affine.shift.data() + first,
            affine.lo, affine.hi, tmp.data(), &acc);
    counts[t] = acc.count;
  }
  std::vector<ChannelMoments> samples(batch);
  double mean[kGroupChannels], m2[kGroupChannels];
  for (int64_t n = 0; n < batch; ++n) {
    ChannelMoments& m = samples[n];
    m.count = spatial;
    m.mean.resize(channels);
    m.m2.resize(channels);
    for (int64_t b = 0; b < blocks; ++b) {
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t first = b * block + g * kGroupChannels;
        const int64_t width =
            std::min({kGroupChannels, block - g * kGroupChannels, channels - first});
        if (width <= 0) continue;  // a group of padding channels only
        Running acc{0, mean, m2};
        for (int64_t k = 0; k < segments; ++k) {
          const int64_t t = ((n * blocks + b) * segments + k) * groups + g;
          const double* p = partial.data() + t * 2 * kGroupChannels;
          Merge(&acc, counts[t], p, p + kGroupChannels, width);
        }
        std::copy(mean, mean + width, m.mean.begin() + first);
        std::copy(m2, m2 + width, m.m2.begin() + first);
      }
    }
  }
  return samples;
}

}  // namespace normserve
