#include "kernels/group_norm_kernel.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace normserve {
namespace {

// The hot loops are compiled for AVX-512 and AVX2 too and picked at load time, so the
// binary stays portable while the loops vectorize on the machines we serve from.
// Not under TSan: it instruments the ifunc resolver, which the loader runs before TSan's
// runtime exists (the process dies in __tsan_func_entry before main).
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define NORMSERVE_NO_TARGET_CLONES
#endif
#endif
#ifdef NORMSERVE_NO_TARGET_CLONES
#define NORMSERVE_VECTOR_CLONES
#else
#define NORMSERVE_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#endif

// sum[c] += x[r][c] and sq[c] += x[r][c]^2 over `rows` rows of `c` channels.
NORMSERVE_VECTOR_CLONES void AccumulateRows(const float* x, int64_t rows, int64_t c, double* sum,
                                            double* sq) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * c;
    for (int64_t j = 0; j < c; ++j) {
      const double v = row[j];
      sum[j] += v;
      sq[j] += v * v;
    }
  }
}

// Sum and sum of squares of n contiguous values; independent lanes so the compiler can
// vectorize without reassociating (no -ffast-math).
NORMSERVE_VECTOR_CLONES void AccumulatePlane(const float* x, int64_t n, double* sum, double* sq) {
  constexpr int kLanes = 8;
  double s[kLanes] = {}, q[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const double v = x[i + j];
      s[j] += v;
      q[j] += v * v;
    }
  }
  double st = 0, qt = 0;
  for (; i < n; ++i) {
    const double v = x[i];
    st += v;
    qt += v * v;
  }
  for (int j = 0; j < kLanes; ++j) {
    st += s[j];
    qt += q[j];
  }
  *sum = st;
  *sq = qt;
}

NORMSERVE_VECTOR_CLONES void ApplyRows(const float* x, int64_t rows, int64_t c, const float* scale,
                                       const float* shift, bool relu, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* in = x + r * c;
    float* out = y + r * c;
    if (relu) {
      for (int64_t j = 0; j < c; ++j) out[j] = std::max(in[j] * scale[j] + shift[j], 0.f);
    } else {
      for (int64_t j = 0; j < c; ++j) out[j] = in[j] * scale[j] + shift[j];
    }
  }
}

NORMSERVE_VECTOR_CLONES void ApplyPlane(const float* x, int64_t n, float scale, float shift,
                                        bool relu, float* y) {
  if (relu) {
    for (int64_t i = 0; i < n; ++i) y[i] = std::max(x[i] * scale + shift, 0.f);
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] * scale + shift;
  }
}

// [begin, end) of `n` items for thread t of nt: contiguous blocks, the same split for
// every sample so the result does not depend on the batch size.
void Block(int64_t n, int t, int nt, int64_t* begin, int64_t* end) {
  *begin = n * t / nt;
  *end = n * (t + 1) / nt;
}

}  // namespace

void GroupNormForward(const GroupNormShape& shape, const float* src, const float* gamma,
                      const float* beta, float epsilon, bool relu, float* dst) {
  const int64_t n = shape.batch, c = shape.channels, s = shape.spatial, g = shape.groups;
  const int64_t per_group = c / g;
  const int max_threads = std::max(1, omp_get_max_threads());
  // Scratch reused across calls on this thread: the serving hot path does not allocate
  // once a context has run each shape once.
  thread_local std::vector<double> moments;  // [n][2][c]: sum, sum of squares
  thread_local std::vector<double> partial;  // [thread][n][2][c]
  thread_local std::vector<float> affine;    // [n][2][c]: scale, shift
  moments.assign(2 * n * c, 0.0);
  affine.resize(2 * n * c);
  double* mom = moments.data();

  if (shape.channels_last) {
    partial.assign(static_cast<size_t>(max_threads) * 2 * n * c, 0.0);
    double* part = partial.data();
#pragma omp parallel num_threads(max_threads)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      int64_t begin, end;
      Block(s, t, nt, &begin, &end);
      for (int64_t b = 0; b < n; ++b) {
        double* mine = part + (static_cast<int64_t>(t) * n + b) * 2 * c;
        AccumulateRows(src + (b * s + begin) * c, end - begin, c, mine, mine + c);
      }
    }
    // Reduced in thread order, so the sums do not depend on scheduling.
    for (int t = 0; t < max_threads; ++t) {
      const double* p = part + static_cast<int64_t>(t) * n * 2 * c;
      for (int64_t i = 0; i < 2 * n * c; ++i) mom[i] += p[i];
    }
  } else {
#pragma omp parallel for num_threads(max_threads) schedule(static)
    for (int64_t plane = 0; plane < n * c; ++plane) {
      const int64_t b = plane / c, ch = plane % c;
      AccumulatePlane(src + plane * s, s, &mom[b * 2 * c + ch], &mom[b * 2 * c + c + ch]);
    }
  }

  // Per group: mean and biased variance; folded with gamma/beta into a per-channel
  // scale and shift.
  const double count = static_cast<double>(per_group * s);
  for (int64_t b = 0; b < n; ++b) {
    const double* sum = mom + b * 2 * c;
    const double* sq = sum + c;
    float* scale = affine.data() + b * 2 * c;
    float* shift = scale + c;
    for (int64_t gi = 0; gi < g; ++gi) {
      double gs = 0, gq = 0;
      for (int64_t ch = gi * per_group; ch < (gi + 1) * per_group; ++ch) {
        gs += sum[ch];
        gq += sq[ch];
      }
      const double mean = gs / count;
      const double var = std::max(gq / count - mean * mean, 0.0);
      const double rstd = 1.0 / std::sqrt(var + static_cast<double>(epsilon));
      for (int64_t ch = gi * per_group; ch < (gi + 1) * per_group; ++ch) {
        const double k = gamma[ch] * rstd;
        scale[ch] = static_cast<float>(k);
        shift[ch] = static_cast<float>(beta[ch] - mean * k);
      }
    }
  }

  const float* aff = affine.data();
  if (shape.channels_last) {
#pragma omp parallel num_threads(max_threads)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      int64_t begin, end;
      Block(s, t, nt, &begin, &end);
      for (int64_t b = 0; b < n; ++b) {
        const int64_t off = (b * s + begin) * c;
        ApplyRows(src + off, end - begin, c, aff + b * 2 * c, aff + b * 2 * c + c, relu, dst + off);
      }
    }
  } else {
#pragma omp parallel for num_threads(max_threads) schedule(static)
    for (int64_t plane = 0; plane < n * c; ++plane) {
      const int64_t b = plane / c, ch = plane % c;
      ApplyPlane(src + plane * s, s, aff[b * 2 * c + ch], aff[b * 2 * c + c + ch], relu,
                 dst + plane * s);
    }
  }
}

}  // namespace normserve
