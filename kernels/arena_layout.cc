#include "kernels/arena_layout.h"

#include <algorithm>
#include <utility>

namespace normserve {

ArenaLayout LayOutArena(const std::vector<BufferLifetime>& buffers, size_t alignment) {
  const size_t nb = buffers.size();
  auto padded = [&](size_t b) {
    return (buffers[b].bytes + alignment - 1) / alignment * alignment;
  };
  std::vector<size_t> order(nb);
  for (size_t i = 0; i < nb; ++i) order[i] = i;
  // Stable: equal sizes keep their index order, so a layout is reproducible.
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return buffers[a].bytes > buffers[b].bytes; });
  ArenaLayout layout;
  layout.offsets.assign(nb, 0);
  std::vector<size_t> placed;
  for (size_t b : order) {
    if (buffers[b].last_step < 0) continue;
    const size_t size = padded(b);
    std::vector<std::pair<size_t, size_t>> busy;
    for (size_t p : placed) {
      if (buffers[p].first_step <= buffers[b].last_step &&
          buffers[b].first_step <= buffers[p].last_step) {
        busy.push_back({layout.offsets[p], layout.offsets[p] + padded(p)});
      }
    }
    std::sort(busy.begin(), busy.end());
    size_t offset = 0;
    for (const auto& [lo, hi] : busy) {
      if (offset + size <= lo) break;
      offset = std::max(offset, hi);
    }
    layout.offsets[b] = offset;
    layout.total_bytes = std::max(layout.total_bytes, offset + size);
    placed.push_back(b);
  }
  return layout;
}

}  // namespace normserve
