// One background thread for slow admin work (model loads and reloads, which compile),
// so a gRPC callback thread never blocks on a compile. Bounded: a client cannot pile up
// unbounded reload requests.
#ifndef NORMSERVE_SERVICE_ADMIN_EXECUTOR_H_
#define NORMSERVE_SERVICE_ADMIN_EXECUTOR_H_

#include <deque>
#include <functional>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace normserve {

class AdminExecutor {
 public:
  explicit AdminExecutor(int max_pending = 16);
  // Runs what is pending, then joins.
  ~AdminExecutor();
  AdminExecutor(const AdminExecutor&) = delete;
  AdminExecutor& operator=(const AdminExecutor&) = delete;

  // Runs `work` later, in submission order. RESOURCE_EXHAUSTED when `max_pending` are
  // waiting, UNAVAILABLE after Shutdown; `work` is then dropped.
  absl::Status Submit(std::function<void()> work);
  void Shutdown();

 private:
  void Loop();

  const int max_pending_;
  absl::Mutex mu_;
  std::deque<std::function<void()>> pending_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_ADMIN_EXECUTOR_H_
