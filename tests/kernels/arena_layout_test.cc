// The arena layout: buffers alive at the same step never share a byte, buffers with
// disjoint lifetimes do, offsets are aligned. Checked against a brute-force overlap test.
#include "kernels/arena_layout.h"

#include <random>

#include "gtest/gtest.h"

namespace normserve {
namespace {

bool LifetimesOverlap(const BufferLifetime& a, const BufferLifetime& b) {
  return a.first_step <= b.last_step && b.first_step <= a.last_step;
}

TEST(ArenaLayout, DisjointLifetimesShareBytes) {
  // A chain a -> b -> c: a and c never live together, so c reuses a's bytes.
  const std::vector<BufferLifetime> buffers = {{1000, 0, 1}, {1000, 1, 2}, {1000, 2, 3}};
  ArenaLayout l = LayOutArena(buffers, 64);
  EXPECT_NE(l.offsets[0], l.offsets[1]);
  EXPECT_NE(l.offsets[1], l.offsets[2]);
  EXPECT_EQ(l.offsets[0], l.offsets[2]);
  EXPECT_EQ(l.total_bytes, 2u * 1024);  // two 1000-byte buffers padded to 64
}

TEST(ArenaLayout, UnusedBuffersTakeNoSpace) {
  ArenaLayout l = LayOutArena({{1 << 20, 0, -1}, {100, 0, 0}}, 64);
  EXPECT_EQ(l.total_bytes, 128u);
  EXPECT_EQ(LayOutArena({}, 64).total_bytes, 0u);
}

TEST(ArenaLayout, RandomLifetimesNeverOverlapAndAreAligned) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    const size_t alignment = size_t{1} << (rng() % 8);
    std::vector<BufferLifetime> buffers(1 + rng() % 40);
    for (auto& b : buffers) {
      b.bytes = 1 + rng() % 5000;
      b.first_step = rng() % 30;
      b.last_step = b.first_step + rng() % 10;
    }
    ArenaLayout l = LayOutArena(buffers, alignment);
    ASSERT_EQ(l.offsets.size(), buffers.size());
    size_t sum = 0;
    for (size_t i = 0; i < buffers.size(); ++i) {
      EXPECT_EQ(l.offsets[i] % alignment, 0u);
      EXPECT_LE(l.offsets[i] + buffers[i].bytes, l.total_bytes);
      sum += (buffers[i].bytes + alignment - 1) / alignment * alignment;
      for (size_t j = i + 1; j < buffers.size(); ++j) {
        if (!LifetimesOverlap(buffers[i], buffers[j])) continue;
        const bool apart = l.offsets[i] + buffers[i].bytes <= l.offsets[j] ||
                           l.offsets[j] + buffers[j].bytes <= l.offsets[i];
        EXPECT_TRUE(apart) << "trial " << trial << ": buffers " << i << " and " << j
                           << " share bytes";
      }
    }
    EXPECT_LE(l.total_bytes, sum);
  }
}

}  // namespace
}  // namespace normserve
