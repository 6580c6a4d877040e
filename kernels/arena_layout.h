// Liveness-based placement of a plan's activation buffers in one arena: buffers whose
// step ranges overlap never share bytes, buffers with disjoint ranges may.
#ifndef NORMSERVE_KERNELS_ARENA_LAYOUT_H_
#define NORMSERVE_KERNELS_ARENA_LAYOUT_H_

#include <cstddef>
#include <vector>

namespace normserve {

struct BufferLifetime {
  size_t bytes = 0;
  int first_step = 0;  // first and last step touching the buffer, inclusive;
  int last_step = -1;  // last_step < 0: never used (gets offset 0, takes no space)
};

struct ArenaLayout {
  std::vector<size_t> offsets;  // per buffer, multiples of the alignment
  size_t total_bytes = 0;       // 0 when no buffer is used
};

// Greedy by decreasing size: each buffer goes to the lowest aligned offset where it
// overlaps no already placed buffer whose lifetime intersects its own.
ArenaLayout LayOutArena(const std::vector<BufferLifetime>& buffers, size_t alignment = 64);

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_ARENA_LAYOUT_H_
