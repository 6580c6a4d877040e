// Bounded queue + fixed pool of worker threads. Each worker owns the execution contexts
// it uses, so running a model takes no lock that a load or another worker can hold; a
// full queue is refused at once rather than letting latency grow without bound.
#ifndef NORMSERVE_SERVICE_INFERENCE_SCHEDULER_H_
#define NORMSERVE_SERVICE_INFERENCE_SCHEDULER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "kernels/tensor.h"
#include "service/servable.h"

namespace normserve {

struct InferenceResult {
  std::vector<Tensor> outputs;  // every model output, in model order
  absl::Duration queue_time;
  absl::Duration compute_time;
};

struct InferenceTask {
  std::shared_ptr<const Servable> servable;
  std::vector<Tensor> inputs;  // validated, in model input order
  // The client's deadline: work still queued past it is answered DEADLINE_EXCEEDED.
  absl::Time deadline = absl::InfiniteFuture();
  // True once the client went away; such work is skipped (CANCELLED). May be empty.
  std::function<bool()> cancelled;
  // Called exactly once, on a worker thread, for every accepted task.
  std::function<void(absl::StatusOr<InferenceResult>)> done;
};

class InferenceScheduler {
 public:
  struct Options {
    int workers = 1;
    // Tasks waiting (not running) beyond which Submit refuses.
    int max_queue = 64;
  };

  explicit InferenceScheduler(const Options& options);
  // Runs what is queued, then joins the workers.
  ~InferenceScheduler();
  InferenceScheduler(const InferenceScheduler&) = delete;
  InferenceScheduler& operator=(const InferenceScheduler&) = delete;

  // Queues `task`. RESOURCE_EXHAUSTED when the queue is full, UNAVAILABLE after
  // Shutdown; `task.done` is then not called.
  absl::Status Submit(InferenceTask task);

  // Stops accepting, runs everything already queued, joins the workers. Idempotent.
  void Shutdown();

  int queued() const;
  const Options& options() const { return options_; }

 private:
  struct Queued {
    InferenceTask task;
    absl::Time enqueued;
  };
  class Worker;

  // Blocks until a task arrives (true) or the scheduler stopped with an empty queue.
  bool Next(Queued* out) ABSL_LOCKS_EXCLUDED(mu_);

  const Options options_;
  mutable absl::Mutex mu_;
  std::deque<Queued> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_INFERENCE_SCHEDULER_H_
