// Workers take the head of the FIFO queue only when its run fits in the free threads;
// deadline and cancel checks come before any compute.
#include "service/inference_scheduler.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace normserve {

InferenceScheduler::InferenceScheduler(const Options& options)
    : options_(options),
      cores_(options.cores > 0
                 ? options.cores
                 : std::max(1, static_cast<int>(std::thread::hardware_concurrency()))),
      workers_(options.workers > 0 ? options.workers : cores_) {
  for (int i = 0; i < workers_; ++i) threads_.emplace_back([this] { WorkerLoop(); });
}

InferenceScheduler::~InferenceScheduler() { Shutdown(); }

int InferenceScheduler::Cost(int threads) const {
  return threads > 0 ? std::min(threads, cores_) : cores_;
}

int InferenceScheduler::TargetStreams() const {
  if (arrivals_.empty()) return 1;
  const int64_t n = static_cast<int64_t>(arrivals_.size());
  // The mean requests-in-the-scheduler seen at arrival, rounded half up.
  const int64_t streams = (2 * arrivals_sum_ + n) / (2 * n);
  return static_cast<int>(std::clamp<int64_t>(streams, 1, workers_));
}

InferenceScheduler::Pick InferenceScheduler::PickForHead() const {
  const Servable& s = *queue_.front().task.servable;
  const int free = cores_ - threads_in_use_;
  if (s.variants.empty()) {  // not built by LoadServable: runs alone and reports it
    return free == cores_ ? Pick{0, cores_} : Pick{};
  }
  if (s.performance_hint != PerformanceHint::kAuto || s.variants.size() == 1) {
    const int cost = Cost(s.variants[0].threads);
    return cost <= free ? Pick{0, cost} : Pick{};
  }
  // auto: the largest variant within this stream count's share that fits in what is free
  // now. Starting smaller rather than waiting keeps every core busy while the shape
  // changes; the share only decides how large a run may grow.
  const int share = std::max(1, cores_ / TargetStreams());
  for (size_t i = 0; i < s.variants.size(); ++i) {
    const int cost = Cost(s.variants[i].threads);
    if (cost <= share && cost <= free) return Pick{static_cast<int>(i), cost};
  }
  const int smallest = static_cast<int>(s.variants.size()) - 1;
  const int cost = Cost(s.variants[smallest].threads);
  return cost <= free ? Pick{smallest, cost} : Pick{};
}

void InferenceScheduler::Account(const std::string& model, int queued, int streams, int threads) {
  ModelLoad& load = models_[model];
  load.queued += queued;
  load.streams += streams;
  load.threads += threads;
  // Only models with work in the scheduler are kept: the map never outgrows the queue.
  if (load.queued == 0 && load.streams == 0 && load.threads == 0) models_.erase(model);
}

absl::Status InferenceScheduler::Submit(InferenceTask task) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return absl::UnavailableError("the server is shutting down");
  if (static_cast<int>(queue_.size()) >= options_.max_queue) {
    return absl::ResourceExhaustedError(
        absl::StrCat("inference queue is full (", options_.max_queue,
                     " requests waiting, max_queue ", options_.max_queue, "); retry later"));
  }
  const int in_scheduler = static_cast<int>(queue_.size()) + running_ + 1;
  const size_t window = static_cast<size_t>(std::max(1, options_.load_window));
  if (arrivals_.size() < window) {
    arrivals_.push_back(in_scheduler);
  } else {
    arrivals_sum_ -= arrivals_[next_arrival_];
    arrivals_[next_arrival_] = in_scheduler;
    next_arrival_ = (next_arrival_ + 1) % window;
  }
  arrivals_sum_ += in_scheduler;
  Account(task.servable->name, 1, 0, 0);
  queue_.push_back({std::move(task), absl::Now()});
  return absl::OkStatus();
}

namespace {

int64_t BatchOf(const InferenceTask& t) {
  return t.inputs.empty() || t.inputs[0].shape.empty() ? 1 : t.inputs[0].shape[0];
}

// What a request must share with a run's first one to join it: the servable version and,
// input by input, the dims besides the batch.
struct JoinKey {
  const Servable* servable = nullptr;
  std::vector<std::vector<int64_t>> shapes;  // dim 0 ignored

  explicit JoinKey(const InferenceTask& head) : servable(head.servable.get()) {
    for (const Tensor& t : head.inputs) shapes.push_back(t.shape);
  }
  bool Admits(const InferenceTask& other) const {
    if (other.servable.get() != servable || other.observe || other.inputs.size() != shapes.size()) {
      return false;
    }
    for (size_t i = 0; i < shapes.size(); ++i) {
      const std::vector<int64_t>& a = shapes[i];
      const std::vector<int64_t>& b = other.inputs[i].shape;
      if (a.size() != b.size() || a.empty() || !std::equal(a.begin() + 1, a.end(), b.begin() + 1))
        return false;
    }
    return true;
  }
};

}  // namespace

void InferenceScheduler::JoinBatch(std::vector<Queued>* batch, std::vector<uint64_t>* orders) {
  // By value: `batch` grows below, which moves its elements.
  const JoinKey key(batch->front().task);
  if (batch->front().task.observe) return;
  const int64_t limit = key.servable->batch_limit;
  const absl::Duration delay = key.servable->batch_delay;
  int64_t samples = BatchOf(batch->front().task);
  const absl::Time wait_until = absl::Now() + delay;
  while (samples < limit) {
    if (queue_.empty()) {
      if (delay <= absl::ZeroDuration() || stopping_) break;
      auto arrived = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return !queue_.empty() || stopping_;
      };
      if (!mu_.AwaitWithDeadline(absl::Condition(&arrived), wait_until) || queue_.empty()) break;
    }
    Queued& next = queue_.front();
    if (!key.Admits(next.task) || samples + BatchOf(next.task) > limit) break;
    samples += BatchOf(next.task);
    Account(next.task.servable->name, -1, 0, 0);
    orders->push_back(++started_);
    batch->push_back(std::move(next));
    queue_.pop_front();
  }
}

void InferenceScheduler::WorkerLoop() {
  while (true) {
    std::vector<Queued> batch;
    std::vector<uint64_t> orders;
    Pick pick;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return queue_.empty() ? stopping_ : PickForHead().variant >= 0;
      };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // stopping and drained
      // Only the head is ever taken: requests start in the order they arrived.
      pick = PickForHead();
      batch.push_back(std::move(queue_.front()));
      queue_.pop_front();
      threads_in_use_ += pick.cost;
      peak_threads_in_use_ = std::max(peak_threads_in_use_, threads_in_use_);
      ++running_;
      orders.push_back(++started_);
      Account(batch.front().task.servable->name, -1, 1, pick.cost);
      if (batch.front().task.servable->batch_limit > 1) JoinBatch(&batch, &orders);
    }
    // `batch` keeps the servable, and so the variant, alive until the run returns.
    const std::shared_ptr<const Servable> servable = batch.front().task.servable;
    const StreamVariant* variant = pick.variant < static_cast<int>(servable->variants.size())
                                       ? &servable->variants[pick.variant]
                                       : nullptr;
    if (batch.size() == 1) {
      Run(std::move(batch.front()), variant, pick.cost, orders.front());
    } else {
      RunBatch(std::move(batch), variant, pick.cost, orders);
    }
    absl::MutexLock lock(&mu_);
    threads_in_use_ -= pick.cost;
    --running_;
    Account(servable->name, 0, -1, -pick.cost);
  }
}

void InferenceScheduler::Run(Queued item, const StreamVariant* variant, int threads,
                             uint64_t order) {
  InferenceTask& task = item.task;
  const absl::Time start = absl::Now();
  if (task.cancelled && task.cancelled()) {
    task.done(absl::CancelledError("the client cancelled the request while it was queued"));
    return;
  }
  if (start > task.deadline) {
    task.done(absl::DeadlineExceededError(absl::StrCat("deadline expired after ",
                                                       absl::FormatDuration(start - item.enqueued),
                                                       " in the queue, before compute started")));
    return;
  }
  std::unique_ptr<ExecutionContext> context =
      variant != nullptr ? variant->contexts->Acquire() : nullptr;
  if (context == nullptr) {
    if (variant != nullptr) variant->contexts->Release(nullptr);
    task.done(absl::InternalError(absl::StrCat("model \"", task.servable->name, "\" version ",
                                               task.servable->version,
                                               ": no execution context could be created")));
    return;
  }
  if (task.started) task.started(threads);
  std::vector<TensorView> views;
  views.reserve(task.inputs.size());
  for (const Tensor& t : task.inputs) views.push_back({t.data.data(), t.shape});
  InferenceResult result;
  absl::Status status =
      context->Run(views, &result.outputs, task.observe ? &result.observations : nullptr);
  variant->contexts->Release(std::move(context));
  const absl::Time end = absl::Now();
  result.queue_time = start - item.enqueued;
  result.compute_time = end - start;
  result.threads = threads;
  result.start_order = order;
  // Inputs are no longer needed; free them before the (possibly slow) reply.
  task.inputs.clear();
  if (!status.ok()) {
    task.done(status);
  } else {
    task.done(std::move(result));
  }
}

void InferenceScheduler::RunBatch(std::vector<Queued> items, const StreamVariant* variant,
                                  int threads, const std::vector<uint64_t>& orders) {
  const absl::Time start = absl::Now();
  // Each request keeps its own cancel and deadline checks; only the live ones are joined.
  std::vector<size_t> live;
  for (size_t i = 0; i < items.size(); ++i) {
    InferenceTask& task = items[i].task;
    if (task.cancelled && task.cancelled()) {
      task.done(absl::CancelledError("the client cancelled the request while it was queued"));
    } else if (start > task.deadline) {
      task.done(absl::DeadlineExceededError(
          absl::StrCat("deadline expired after ", absl::FormatDuration(start - items[i].enqueued),
                       " in the queue, before compute started")));
    } else {
      live.push_back(i);
    }
  }
  if (live.empty()) return;
  if (live.size() == 1) {
    Run(std::move(items[live[0]]), variant, threads, orders[live[0]]);
    return;
  }
  auto fail_all = [&](const absl::Status& status) {
    for (size_t i : live) items[i].task.done(status);
  };
  const InferenceTask& head = items[live[0]].task;
  std::unique_ptr<ExecutionContext> context =
      variant != nullptr ? variant->contexts->Acquire() : nullptr;
  if (context == nullptr) {
    if (variant != nullptr) variant->contexts->Release(nullptr);
    fail_all(absl::InternalError(absl::StrCat("model \"", head.servable->name, "\" version ",
                                              head.servable->version,
                                              ": no execution context could be created")));
    return;
  }
  // One tensor per input: the requests' samples back to back along the batch dim.
  std::vector<int64_t> batches;
  int64_t total = 0;
  for (size_t i : live) {
    batches.push_back(BatchOf(items[i].task));
    total += batches.back();
  }
  std::vector<Tensor> joined(head.inputs.size());
  for (size_t k = 0; k < joined.size(); ++k) {
    joined[k].shape = head.inputs[k].shape;
    joined[k].shape[0] = total;
    for (size_t i : live) {
      const std::vector<float>& d = items[i].task.inputs[k].data;
      joined[k].data.insert(joined[k].data.end(), d.begin(), d.end());
    }
  }
  for (size_t i : live) {
    if (items[i].task.started) items[i].task.started(threads);
  }
  std::vector<TensorView> views;
  for (const Tensor& t : joined) views.push_back({t.data.data(), t.shape});
  std::vector<Tensor> outputs;
  const absl::Status status = context->Run(views, &outputs);
  variant->contexts->Release(std::move(context));
  const absl::Time end = absl::Now();
  if (!status.ok()) {
    fail_all(status);
    return;
  }
  for (const Tensor& o : outputs) {
    if (o.shape.empty() || o.shape[0] != total) {
      fail_all(absl::InternalError(
          absl::StrCat("model \"", head.servable->name, "\": an output's dim 0 is not the batch (",
                       o.shape.empty() ? 0 : o.shape[0], " for ", total, " joined samples)")));
      return;
    }
  }
  // Each request gets its rows of every output.
  int64_t row = 0;
  for (size_t j = 0; j < live.size(); ++j) {
    Queued& item = items[live[j]];
    InferenceResult result;
    for (const Tensor& o : outputs) {
      const size_t per_sample = o.data.size() / static_cast<size_t>(total);
      Tensor mine;
      mine.shape = o.shape;
      mine.shape[0] = batches[j];
      mine.data.assign(o.data.begin() + row * per_sample,
                       o.data.begin() + (row + batches[j]) * per_sample);
      result.outputs.push_back(std::move(mine));
    }
    row += batches[j];
    result.queue_time = start - item.enqueued;
    result.compute_time = end - start;
    result.threads = threads;
    result.start_order = orders[live[j]];
    result.joined = static_cast<int>(live.size());
    item.task.inputs.clear();
    item.task.done(std::move(result));
  }
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

void InferenceScheduler::WaitUntilIdle() const {
  absl::MutexLock lock(&mu_);
  auto idle = [this]()
                  ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return queue_.empty() && running_ == 0; };
  mu_.Await(absl::Condition(&idle));
}

int InferenceScheduler::queued() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(queue_.size());
}

InferenceScheduler::Stats InferenceScheduler::stats() const {
  absl::MutexLock lock(&mu_);
  Stats s;
  s.queued = static_cast<int>(queue_.size());
  s.streams_in_use = running_;
  s.threads_in_use = threads_in_use_;
  s.peak_threads_in_use = peak_threads_in_use_;
  s.target_streams = TargetStreams();
  s.models = models_;
  return s;
}

}  // namespace normserve
