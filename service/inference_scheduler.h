// Bounded FIFO queue + adaptive streams: requests start strictly in arrival order, each on
// a variant of its servable compiled for some number of OpenMP threads, and the threads
// of all running requests never add up to more than the core budget. A lone request gets
// every core; when requests pile up, several run at once on smaller thread groups
// (OpenVINO's streams). A full queue is refused at once rather than letting latency grow
// without bound.
#ifndef NORMSERVE_SERVICE_INFERENCE_SCHEDULER_H_
#define NORMSERVE_SERVICE_INFERENCE_SCHEDULER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
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
  // Threads counted for the run against the budget (its stream's size).
  int threads = 0;
  // 1 for the first task the scheduler started, then 2, ...: FIFO means this follows the
  // order of Submit.
  uint64_t start_order = 0;
  // With InferenceTask::observe: the observed BN layers' per-sample input moments.
  BnObservations observations;
  // Requests that ran together in this run (dynamic batching; 1: alone).
  int joined = 1;
};

struct InferenceTask {
  std::shared_ptr<const Servable> servable;
  std::vector<Tensor> inputs;  // validated, in model input order
  // The client's deadline: work still queued past it is answered DEADLINE_EXCEEDED.
  absl::Time deadline = absl::InfiniteFuture();
  // True once the client went away; such work is skipped (CANCELLED). May be empty.
  std::function<bool()> cancelled;
  // Record the observed BN layers' input moments (a training session's servable).
  bool observe = false;
  // Called on the worker right before compute, with the threads counted for the run (in
  // a joined run, every request's hook gets the run's threads). May be empty.
  std::function<void(int threads)> started;
  // Called exactly once, on a worker thread, for every accepted task. The run's threads
  // stay counted as in use until it returns.
  std::function<void(absl::StatusOr<InferenceResult>)> done;
};

class InferenceScheduler {
 public:
  struct Options {
    // Most requests running at once (streams); 0: `cores`.
    int workers = 0;
    // Tasks waiting (not running) beyond which Submit refuses.
    int max_queue = 64;
    // Threads all running requests may use together; 0: the machine's cores. A variant
    // with more threads than this runs alone, counted as the whole budget.
    int cores = 0;
    // `auto` servables: how many recent arrivals the load estimate averages over.
    int load_window = 16;
  };

  // What one model has in the scheduler now.
  struct ModelLoad {
    int queued = 0;
    int streams = 0;  // its requests running
    int threads = 0;  // threads those runs hold
  };
  struct Stats {
    int queued = 0;
    int streams_in_use = 0;
    int threads_in_use = 0;
    int peak_threads_in_use = 0;  // since start: never above cores()
    // Streams `auto` servables are cut into now (from the load estimate).
    int target_streams = 1;
    std::map<std::string, ModelLoad> models;  // only models with work queued or running
  };

  explicit InferenceScheduler(const Options& options);
  // Runs what is queued, then joins the workers.
  ~InferenceScheduler();
  InferenceScheduler(const InferenceScheduler&) = delete;
  InferenceScheduler& operator=(const InferenceScheduler&) = delete;

  // Queues `task`. RESOURCE_EXHAUSTED when the queue is full, UNAVAILABLE after
  // Shutdown; `task.done` is then not called.
  absl::Status Submit(InferenceTask task) ABSL_LOCKS_EXCLUDED(mu_);

  // Stops accepting, runs everything already queued, joins the workers. Idempotent.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_);

  // Blocks until nothing is queued or running (every `done` has returned and its threads
  // are released).
  void WaitUntilIdle() const ABSL_LOCKS_EXCLUDED(mu_);

  int queued() const ABSL_LOCKS_EXCLUDED(mu_);
  Stats stats() const ABSL_LOCKS_EXCLUDED(mu_);
  int cores() const { return cores_; }
  int workers() const { return workers_; }
  const Options& options() const { return options_; }

 private:
  struct Queued {
    InferenceTask task;
    absl::Time enqueued;
  };
  // The variant the head of the queue starts on and the threads it is counted for.
  struct Pick {
    int variant = -1;  // -1: it cannot start yet
    int cost = 0;
  };

  void WorkerLoop() ABSL_LOCKS_EXCLUDED(mu_);
  // Takes the requests queued right behind `head` that can join its run (same servable,
  // same shapes besides the batch, up to its batch_limit samples), waiting up to its
  // batch_delay for more; only ever the front of the queue, so FIFO holds.
  void JoinBatch(std::vector<Queued>* batch, std::vector<uint64_t>* orders)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static void Run(Queued item, const StreamVariant* variant, int threads, uint64_t order);
  static void RunBatch(std::vector<Queued> items, const StreamVariant* variant, int threads,
                       const std::vector<uint64_t>& orders);
  Pick PickForHead() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int TargetStreams() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int Cost(int threads) const;
  void Account(const std::string& model, int queued, int streams, int threads)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  const int cores_;
  const int workers_;
  mutable absl::Mutex mu_;
  std::deque<Queued> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int threads_in_use_ ABSL_GUARDED_BY(mu_) = 0;
  int peak_threads_in_use_ ABSL_GUARDED_BY(mu_) = 0;
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t started_ ABSL_GUARDED_BY(mu_) = 0;
  // Requests in the scheduler (queued + running) each recent arrival found, itself
  // included: under a closed loop of N clients this is about N even when the queue is
  // momentarily empty, which the instantaneous depth is not.
  std::vector<int> arrivals_ ABSL_GUARDED_BY(mu_);
  size_t next_arrival_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t arrivals_sum_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, ModelLoad> models_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_;
};

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_INFERENCE_SCHEDULER_H_
