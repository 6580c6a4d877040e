// Request path: lookup (a pointer copy), validation, one queue slot, accounting.
#include "service/predictor.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace normserve {

Predictor::Predictor(const ServableManager* manager, InferenceScheduler* scheduler,
                     Metrics* metrics, InferenceObserver* observer)
    : manager_(manager), scheduler_(scheduler), metrics_(metrics), observer_(observer) {}

void Predictor::Predict(absl::StatusOr<PredictCall> decoded,
                        std::function<void(absl::StatusOr<PredictResult>)> done) {
  const absl::Time arrival = absl::Now();
  last_arrival_ns_.store(absl::ToUnixNanos(arrival), std::memory_order_relaxed);
  if (metrics_ != nullptr) metrics_->RequestStarted();
  inflight_.fetch_add(1);
  // Every exit goes through here, so the inflight gauge and the counters stay exact.
  // `reporter`: the version's metric handles (null without metrics).
  auto finish = [metrics = metrics_, inflight = &inflight_, arrival, done = std::move(done)](
                    const std::shared_ptr<ModelMetrics>& reporter,
                    absl::StatusOr<PredictResult> result) {
    if (metrics != nullptr) {
      metrics->RequestEnded();
      reporter->RequestFinished(result.status().code(), absl::Now() - arrival);
    }
    done(std::move(result));
    // After `done`: the reply is handed to gRPC before a drain may consider us idle.
    inflight->fetch_sub(1);
  };

  const std::shared_ptr<ModelMetrics> unresolved =
      metrics_ != nullptr ? metrics_->Unresolved() : nullptr;
  if (draining()) {
    finish(unresolved, absl::UnavailableError("the server is shutting down"));
    return;
  }
  if (!decoded.ok()) {
    finish(unresolved, decoded.status());
    return;
  }
  PredictCall& call = *decoded;
  absl::StatusOr<std::shared_ptr<const Servable>> servable =
      manager_->Get(call.model, call.version);
  if (!servable.ok()) {
    finish(unresolved, servable.status());
    return;
  }
  std::shared_ptr<const Servable> s = *std::move(servable);
  const std::shared_ptr<ModelMetrics> reporter =
      metrics_ != nullptr ? metrics_->ForModel(s->name, s->version) : nullptr;

  absl::StatusOr<std::vector<int>> outputs =
      ResolveRequestedOutputs(s->model().outputs(), call.outputs);
  if (!outputs.ok()) {
    finish(reporter, outputs.status());
    return;
  }
  absl::StatusOr<std::vector<Tensor>> inputs =
      ValidateInputs(s->model().inputs(), call.inputs, s->validation);
  if (!inputs.ok()) {
    finish(reporter, inputs.status());
    return;
  }
  if (absl::Now() > call.deadline) {
    finish(reporter, absl::DeadlineExceededError("deadline expired before queueing"));
    return;
  }

  // `finish` is shared by the queued task and the refusal path below; only one runs.
  auto shared_finish = std::make_shared<decltype(finish)>(std::move(finish));
  // A sampled request's inputs go to the observer (the live drift watch) after it has
  // been answered: it never delays or changes a response.
  std::shared_ptr<std::vector<Tensor>> watched;
  if (observer_ != nullptr && !s->model().bn_layers().empty() && observer_->Sample())
    watched = std::make_shared<std::vector<Tensor>>(*inputs);
  InferenceTask task;
  task.servable = s;
  task.inputs = *std::move(inputs);
  task.deadline = call.deadline;
  task.cancelled = std::move(call.cancelled);
  task.done = [shared_finish, s, indices = *outputs, reporter, observer = observer_,
               watched](absl::StatusOr<InferenceResult> r) {
    if (!r.ok()) {
      (*shared_finish)(reporter, r.status());
      return;
    }
    if (reporter != nullptr) {
      reporter->ObserveQueue(r->queue_time);
      reporter->ObserveCompute(r->compute_time);
    }
    PredictResult result;
    result.servable = s;
    result.output_indices = indices;
    for (int i : indices) {
      if (i >= static_cast<int>(r->outputs.size())) {
        (*shared_finish)(reporter,
                         absl::InternalError(absl::StrCat("the engine returned ", r->outputs.size(),
                                                          " outputs, the model declares ",
                                                          s->model().outputs().size())));
        return;
      }
      result.outputs.push_back(std::move(r->outputs[i]));
    }
    (*shared_finish)(reporter, std::move(result));
    if (watched != nullptr) observer->Offer(s, std::move(*watched));
  };
  absl::Status queued = scheduler_->Submit(std::move(task));
  if (!queued.ok()) (*shared_finish)(reporter, queued);
}

}  // namespace normserve
