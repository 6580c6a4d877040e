// A copy where each output index along each axis reads one input index (or a fill value):
// the custom kernel behind Pad (constant, reflect, edge; crops too) and Expand
// (broadcast), which oneDNN 2.6 has no primitive for.
#ifndef NORMSERVE_KERNELS_INDEX_MAP_KERNEL_H_
#define NORMSERVE_KERNELS_INDEX_MAP_KERNEL_H_

#include <cstdint>
#include <vector>

namespace normserve {

// Plain (row-major) float32 tensors of equal rank. maps[a] has out_dims[a] entries, each
// the input index along axis a to read, or -1 for `fill`. Every non-negative entry of
// maps[a] is < in_dims[a] (callers build the maps; AxisMapsAreValid checks them).
struct IndexMapCopy {
  std::vector<int64_t> in_dims;
  std::vector<std::vector<int64_t>> maps;
  float fill = 0.f;
};

bool AxisMapsAreValid(const IndexMapCopy& c);

// y[o_0, ..., o_r-1] = all maps[a][o_a] >= 0 ? x[maps[0][o_0], ...] : fill.
void RunIndexMapCopy(const IndexMapCopy& c, const float* x, float* y);

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_INDEX_MAP_KERNEL_H_
