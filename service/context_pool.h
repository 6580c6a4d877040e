// Execution contexts of one compiled stream variant, made (and bound by one warm-up run)
// when the model loads, so a request never creates one: switching the stream shape
// under load costs no allocation, no page faults and no compile on the request path.
#ifndef NORMSERVE_SERVICE_CONTEXT_POOL_H_
#define NORMSERVE_SERVICE_CONTEXT_POOL_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "kernels/engine.h"

namespace normserve {

class ContextPool {
 public:
  // Makes `prepared` contexts of `compiled`; with `warm`, runs each once on zeros at the
  // primary shape so its arena and scratchpad are allocated and touched now. The pool
  // keeps at most max(prepared, most contexts ever out at once) idle: bounded by the
  // scheduler's streams.
  ContextPool(std::shared_ptr<const CompiledModel> compiled, int prepared, bool warm);
  ContextPool(const ContextPool&) = delete;
  ContextPool& operator=(const ContextPool&) = delete;

  // An idle context, or a new one (counted) when all are in use. Null only when the
  // engine cannot make a context. Every Acquire is matched by one Release.
  std::unique_ptr<ExecutionContext> Acquire() ABSL_LOCKS_EXCLUDED(mu_);
  void Release(std::unique_ptr<ExecutionContext> context) ABSL_LOCKS_EXCLUDED(mu_);

  int prepared() const { return prepared_; }
  // Contexts Acquire had to create: 0 while the scheduler never runs more streams of
  // this variant than were prepared.
  int64_t created_on_demand() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  const std::shared_ptr<const CompiledModel> compiled_;
  const int prepared_;
  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<ExecutionContext>> idle_ ABSL_GUARDED_BY(mu_);
  int64_t created_on_demand_ ABSL_GUARDED_BY(mu_) = 0;
  int outstanding_ ABSL_GUARDED_BY(mu_) = 0;
  int peak_outstanding_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_CONTEXT_POOL_H_
