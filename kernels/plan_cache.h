// Compiled plans keyed by their concrete input shapes, held under a byte budget, so that
// no client can grow a model's memory by sending shapes it has not seen (issue 9: one
// request per batch size 1..32 once took a server from 302 MB to 5.2 GB).
#ifndef NORMSERVE_KERNELS_PLAN_CACHE_H_
#define NORMSERVE_KERNELS_PLAN_CACHE_H_

#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace normserve {

class Plan;

// One concrete shape per model input, in the model's input order.
using InputShapes = std::vector<std::vector<int64_t>>;

// What a plan keeps alive: its constant (reordered) weights plus the activation arena and
// scratchpad every execution context binding it allocates once.
size_t PlanBytes(const Plan& plan);

struct PlanCacheStats {
  int64_t hits = 0;
  int64_t misses = 0;
  int64_t compiles = 0;
  int64_t compile_failures = 0;
  int64_t evictions = 0;
  double compile_seconds = 0;
  int64_t bytes = 0;         // held now, pinned plans included
  int64_t pinned_bytes = 0;  // of which pinned
  int64_t entries = 0;       // held now
};

// Least-recently-used eviction once the plans that are not pinned (pinned: those compiled
// at load, which the model's configuration asked for) hold more than `max_bytes`. Eviction only
// drops the cache's reference: a plan a running request holds lives until that request lets go of
// it. Builds happen outside the cache's lock, one at a time per cache (a burst of new shapes queues
// behind one compile instead of compiling them all at once), and concurrent requests for the same
// new shape wait for a single build.
class PlanCache {
 public:
  using Builder = std::function<absl::StatusOr<std::shared_ptr<const Plan>>(const InputShapes&)>;

  PlanCache(size_t max_bytes, Builder builder);

  // Keeps `plan` for `key` for the life of the cache.
  void Pin(const InputShapes& key, std::shared_ptr<const Plan> plan);

  // The cached plan (now the most recently used, counted as a hit), or null (not counted:
  // the caller decides whether it builds, through Get, or runs another way).
  std::shared_ptr<const Plan> Find(const InputShapes& key);
  bool Contains(const InputShapes& key) const;

  // The plan for `key`, building it if it is not cached. A plan larger than the whole
  // budget is returned to the caller but not kept.
  absl::StatusOr<std::shared_ptr<const Plan>> Get(const InputShapes& key);

  PlanCacheStats stats() const;
  size_t max_bytes() const { return max_bytes_; }

 private:
  struct Entry {
    std::shared_ptr<const Plan> plan;
    size_t bytes = 0;
    bool pinned = false;
    std::list<InputShapes>::iterator lru;  // valid when !pinned
  };
  // A build in progress: waiters block on `done` without holding mu_.
  struct Pending {
    absl::Mutex mu;
    bool done ABSL_GUARDED_BY(mu) = false;
    absl::StatusOr<std::shared_ptr<const Plan>> result ABSL_GUARDED_BY(mu);
  };

  void InsertLocked(const InputShapes& key, std::shared_ptr<const Plan> plan, bool pinned)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EvictLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const size_t max_bytes_;
  const Builder builder_;
  // Serializes builds; never held together with mu_ by the same thread while building.
  absl::Mutex build_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  mutable absl::Mutex mu_;
  std::map<InputShapes, Entry> entries_ ABSL_GUARDED_BY(mu_);
  std::list<InputShapes> lru_ ABSL_GUARDED_BY(mu_);  // front: most recent; pinned not listed
  std::map<InputShapes, std::shared_ptr<Pending>> pending_ ABSL_GUARDED_BY(mu_);
  PlanCacheStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_PLAN_CACHE_H_
