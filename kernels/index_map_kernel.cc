#include "kernels/index_map_kernel.h"

#include <cstddef>

namespace normserve {

bool AxisMapsAreValid(const IndexMapCopy& c) {
  if (c.maps.size() != c.in_dims.size() || c.maps.empty()) return false;
  for (size_t a = 0; a < c.maps.size(); ++a) {
    if (c.maps[a].empty()) return false;
    for (int64_t i : c.maps[a]) {
      if (i < -1 || i >= c.in_dims[a]) return false;
    }
  }
  return true;
}

void RunIndexMapCopy(const IndexMapCopy& c, const float* x, float* y) {
  const size_t rank = c.maps.size();
  // Input strides (elements) and the number of output rows (all axes but the last).
  std::vector<int64_t> in_stride(rank, 1);
  for (size_t a = rank - 1; a > 0; --a) in_stride[a - 1] = in_stride[a] * c.in_dims[a];
  int64_t rows = 1;
  for (size_t a = 0; a + 1 < rank; ++a) rows *= static_cast<int64_t>(c.maps[a].size());
  const std::vector<int64_t>& last = c.maps[rank - 1];
  const int64_t width = static_cast<int64_t>(last.size());
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < rows; ++row) {
    // Decompose the row into output indices, last outer axis fastest.
    int64_t rest = row, base = 0;
    bool filled = false;
    for (size_t a = rank - 1; a > 0; --a) {
      const std::vector<int64_t>& m = c.maps[a - 1];
      const int64_t n = static_cast<int64_t>(m.size());
      const int64_t src = m[rest % n];
      rest /= n;
      if (src < 0)
        filled = true;
      else
        base += src * in_stride[a - 1];
    }
    float* out = y + row * width;
    if (filled) {
      for (int64_t j = 0; j < width; ++j) out[j] = c.fill;
      continue;
    }
    const float* in = x + base;
    for (int64_t j = 0; j < width; ++j) out[j] = last[j] >= 0 ? in[last[j]] : c.fill;
  }
}

}  // namespace normserve
