// Worker pool: FIFO queue, per-worker execution contexts, deadline and cancel checks
// before any compute starts.
#include "service/inference_scheduler.h"

#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"

namespace normserve {
namespace {

// How often an idle worker drops contexts of servables that were unloaded, so an
// unloaded model's memory does not wait for the next request to be freed.
constexpr absl::Duration kIdleSweep = absl::Seconds(1);

}  // namespace

// One thread's state: its execution contexts, one per servable it has run. Nobody else
// touches them, which is what lets contexts run without locks.
class InferenceScheduler::Worker {
 public:
  void Run(Queued item) {
    InferenceTask& task = item.task;
    const absl::Time start = absl::Now();
    if (task.cancelled && task.cancelled()) {
      task.done(absl::CancelledError("the client cancelled the request while it was queued"));
      return;
    }
    if (start > task.deadline) {
      task.done(absl::DeadlineExceededError(
          absl::StrCat("deadline expired after ", absl::FormatDuration(start - item.enqueued),
                       " in the queue, before compute started")));
      return;
    }
    absl::StatusOr<ExecutionContext*> context = ContextFor(task.servable);
    if (!context.ok()) {
      task.done(context.status());
      return;
    }
    std::vector<TensorView> views;
    views.reserve(task.inputs.size());
    for (const Tensor& t : task.inputs) views.push_back({t.data.data(), t.shape});
    InferenceResult result;
    absl::Status status = (*context)->Run(views, &result.outputs);
    const absl::Time end = absl::Now();
    result.queue_time = start - item.enqueued;
    result.compute_time = end - start;
    // Inputs are no longer needed; free them before the (possibly slow) reply.
    task.inputs.clear();
    if (!status.ok()) {
      task.done(status);
    } else {
      task.done(std::move(result));
    }
  }

  // Drops contexts whose servable is gone (unloaded or replaced).
  void Sweep() {
    for (auto it = contexts_.begin(); it != contexts_.end();) {
      if (it->second.servable.expired()) {
        contexts_.erase(it++);
      } else {
        ++it;
      }
    }
  }

 private:
  struct Entry {
    std::weak_ptr<const Servable> servable;
    std::unique_ptr<ExecutionContext> context;
  };

  absl::StatusOr<ExecutionContext*> ContextFor(const std::shared_ptr<const Servable>& servable) {
    auto it = contexts_.find(servable->id);
    if (it == contexts_.end()) {
      std::unique_ptr<ExecutionContext> context = servable->compiled->NewContext();
      if (context == nullptr) {
        return absl::InternalError(absl::StrCat("model \"", servable->name, "\" version ",
                                                servable->version,
                                                ": no execution context could be created"));
      }
      it = contexts_.emplace(servable->id, Entry{servable, std::move(context)}).first;
    }
    return it->second.context.get();
  }

  absl::flat_hash_map<uint64_t, Entry> contexts_;
};

InferenceScheduler::InferenceScheduler(const Options& options) : options_(options) {
  const int workers = options_.workers > 0 ? options_.workers : 1;
  for (int i = 0; i < workers; ++i) {
    threads_.emplace_back([this] {
      Worker worker;
      Queued item;
      while (Next(&item)) {
        if (item.task.done) worker.Run(std::move(item));
        item = Queued();
        worker.Sweep();
      }
    });
  }
}

InferenceScheduler::~InferenceScheduler() { Shutdown(); }

absl::Status InferenceScheduler::Submit(InferenceTask task) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return absl::UnavailableError("the server is shutting down");
  if (static_cast<int>(queue_.size()) >= options_.max_queue) {
    return absl::ResourceExhaustedError(
        absl::StrCat("inference queue is full (", options_.max_queue,
                     " requests waiting, max_queue ", options_.max_queue, "); retry later"));
  }
  queue_.push_back({std::move(task), absl::Now()});
  return absl::OkStatus();
}

bool InferenceScheduler::Next(Queued* out) {
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !queue_.empty() || stopping_; };
  if (!mu_.AwaitWithTimeout(absl::Condition(&ready), kIdleSweep)) {
    *out = Queued();  // idle: let the worker sweep and come back
    return true;
  }
  if (queue_.empty()) return false;  // stopping and drained
  *out = std::move(queue_.front());
  queue_.pop_front();
  return true;
}

void InferenceScheduler::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
}

int InferenceScheduler::queued() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(queue_.size());
}

}  // namespace normserve
