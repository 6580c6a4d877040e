#include "kernels/plan_cache.h"

#include <utility>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "kernels/plan.h"

namespace normserve {

size_t PlanBytes(const Plan& plan) {
  return plan.const_bytes + plan.arena_bytes + plan.scratchpad_bytes;
}

PlanCache::PlanCache(size_t max_bytes, Builder builder)
    : max_bytes_(max_bytes), builder_(std::move(builder)) {}

void PlanCache::Pin(const InputShapes& key, std::shared_ptr<const Plan> plan) {
  absl::MutexLock lock(&mu_);
  InsertLocked(key, std::move(plan), /*pinned=*/true);
}

std::shared_ptr<const Plan> PlanCache::Find(const InputShapes& key) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return nullptr;
  ++stats_.hits;
  if (!it->second.pinned) lru_.splice(lru_.begin(), lru_, it->second.lru);
  return it->second.plan;
}

bool PlanCache::Contains(const InputShapes& key) const {
  absl::MutexLock lock(&mu_);
  return entries_.count(key) > 0;
}

absl::StatusOr<std::shared_ptr<const Plan>> PlanCache::Get(const InputShapes& key) {
  std::shared_ptr<Pending> pending;
  bool build = false;
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(key);
    if (it != entries_.end()) {
      ++stats_.hits;
      if (!it->second.pinned) lru_.splice(lru_.begin(), lru_, it->second.lru);
      return it->second.plan;
    }
    ++stats_.misses;
    auto p = pending_.find(key);
    if (p != pending_.end()) {
      pending = p->second;
    } else {
      pending = std::make_shared<Pending>();
      pending_.emplace(key, pending);
      build = true;
    }
  }
  if (!build) {
    absl::MutexLock lock(&pending->mu, absl::Condition(&pending->done));
    return pending->result;
  }

  absl::StatusOr<std::shared_ptr<const Plan>> result;
  absl::Duration took;
  {
    absl::MutexLock building(&build_mu_);
    const absl::Time start = absl::Now();
    result = builder_(key);
    took = absl::Now() - start;
  }
  {
    absl::MutexLock lock(&mu_);
    if (result.ok()) {
      ++stats_.compiles;
      if (PlanBytes(**result) <= max_bytes_) {
        InsertLocked(key, *result, /*pinned=*/false);
        EvictLocked();
      }
    } else {
      ++stats_.compile_failures;
    }
    stats_.compile_seconds += absl::ToDoubleSeconds(took);
    pending_.erase(key);
  }
  absl::MutexLock lock(&pending->mu);
  pending->result = result;
  pending->done = true;
  return result;
}

PlanCacheStats PlanCache::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

void PlanCache::InsertLocked(const InputShapes& key, std::shared_ptr<const Plan> plan,
                             bool pinned) {
  auto it = entries_.find(key);
  if (it != entries_.end()) {
    stats_.bytes -= it->second.bytes;
    if (it->second.pinned) stats_.pinned_bytes -= it->second.bytes;
    --stats_.entries;
    if (!it->second.pinned) lru_.erase(it->second.lru);
    entries_.erase(it);
  }
  Entry e;
  e.bytes = PlanBytes(*plan);
  e.plan = std::move(plan);
  e.pinned = pinned;
  if (!pinned) {
    lru_.push_front(key);
    e.lru = lru_.begin();
  }
  stats_.bytes += e.bytes;
  if (pinned) stats_.pinned_bytes += e.bytes;
  ++stats_.entries;
  entries_.emplace(key, std::move(e));
}

void PlanCache::EvictLocked() {
  while (stats_.bytes - stats_.pinned_bytes > static_cast<int64_t>(max_bytes_) && !lru_.empty()) {
    auto it = entries_.find(lru_.back());
    stats_.bytes -= it->second.bytes;
    --stats_.entries;
    ++stats_.evictions;
    entries_.erase(it);
    lru_.pop_back();
  }
}

}  // namespace normserve
