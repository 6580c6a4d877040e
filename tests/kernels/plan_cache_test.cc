// The plan cache holds plans under a byte budget (least recently used evicted, pinned
// plans kept), builds a shape once however many requests ask for it at the same time,
// and never keeps a failed build.
#include "kernels/plan_cache.h"

#include <atomic>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/plan.h"

namespace normserve {
namespace {

std::shared_ptr<const Plan> PlanOfBytes(size_t bytes) {
  auto p = std::make_shared<Plan>();
  p->arena_bytes = bytes;
  return p;
}

InputShapes Key(int64_t batch) { return {{batch, 3, 8, 8}}; }

TEST(PlanCache, EvictsLeastRecentlyUsedPastTheByteBudget) {
  std::atomic<int> builds{0};
  PlanCache cache(300, [&](const InputShapes&) {
    ++builds;
    return PlanOfBytes(100);
  });
  for (int64_t b = 1; b <= 3; ++b) ASSERT_TRUE(cache.Get(Key(b)).ok());
  ASSERT_NE(cache.Find(Key(1)), nullptr);  // 1 is now the most recent: 2 goes first
  ASSERT_TRUE(cache.Get(Key(4)).ok());
  EXPECT_EQ(cache.Find(Key(2)), nullptr);
  EXPECT_NE(cache.Find(Key(1)), nullptr);
  EXPECT_NE(cache.Find(Key(3)), nullptr);
  const PlanCacheStats s = cache.stats();
  EXPECT_EQ(s.bytes, 300);
  EXPECT_EQ(s.entries, 3);
  EXPECT_EQ(s.evictions, 1);
  EXPECT_EQ(s.compiles, 4);
  EXPECT_EQ(builds.load(), 4);
  // Many distinct shapes never take the cache past its budget.
  for (int64_t b = 5; b < 100; ++b) ASSERT_TRUE(cache.Get(Key(b)).ok());
  EXPECT_LE(cache.stats().bytes, 300);
}

TEST(PlanCache, PinnedPlansAreNeverEvictedAndAPlanOverTheBudgetIsNotKept) {
  PlanCache cache(150, [](const InputShapes& k) { return PlanOfBytes(k[0][0] == 9 ? 1000 : 100); });
  cache.Pin(Key(1), PlanOfBytes(100));
  for (int64_t b = 2; b < 6; ++b) ASSERT_TRUE(cache.Get(Key(b)).ok());
  EXPECT_NE(cache.Find(Key(1)), nullptr);
  auto big = cache.Get(Key(9));
  ASSERT_TRUE(big.ok());
  EXPECT_NE(*big, nullptr);
  EXPECT_EQ(cache.Find(Key(9)), nullptr);
}

TEST(PlanCache, AnEvictedPlanStaysValidForItsHolder) {
  PlanCache cache(100, [](const InputShapes&) { return PlanOfBytes(100); });
  auto held = cache.Get(Key(1));
  ASSERT_TRUE(held.ok());
  ASSERT_TRUE(cache.Get(Key(2)).ok());
  EXPECT_EQ(cache.Find(Key(1)), nullptr);
  EXPECT_EQ((*held)->arena_bytes, 100u);  // still alive through the holder's reference
  EXPECT_EQ(held->use_count(), 1);
}

TEST(PlanCache, ConcurrentRequestsForOneNewShapeBuildItOnce) {
  std::atomic<int> builds{0};
  PlanCache cache(1 << 20, [&](const InputShapes&) {
    ++builds;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    return PlanOfBytes(10);
  });
  std::vector<std::thread> threads;
  std::atomic<int> same{0};
  std::shared_ptr<const Plan> first;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      auto p = cache.Get(Key(7));
      if (p.ok() && *p != nullptr) ++same;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(builds.load(), 1);
  EXPECT_EQ(same.load(), 8);
  EXPECT_EQ(cache.stats().misses, 8);
}

TEST(PlanCache, AFailedBuildIsReportedAndNotKept) {
  int builds = 0;
  PlanCache cache(1 << 20, [&](const InputShapes&) -> absl::StatusOr<std::shared_ptr<const Plan>> {
    if (++builds == 1) return absl::InvalidArgumentError("no");
    return PlanOfBytes(10);
  });
  EXPECT_EQ(cache.Get(Key(3)).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache.stats().compile_failures, 1);
  EXPECT_TRUE(cache.Get(Key(3)).ok());
  EXPECT_EQ(builds, 2);
}

}  // namespace
}  // namespace normserve
