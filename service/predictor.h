// The one domain call behind both inference APIs (normserve.v1 Predict and KServe
// ModelInfer): resolve the servable, validate, queue, and account for the request.
#ifndef NORMSERVE_SERVICE_PREDICTOR_H_
#define NORMSERVE_SERVICE_PREDICTOR_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "service/inference_observer.h"
#include "service/inference_scheduler.h"
#include "service/metrics.h"
#include "service/request_validation.h"
#include "service/servable_manager.h"

namespace normserve {

struct PredictCall {
  std::string model;
  int64_t version = 0;  // 0: latest serving
  // Borrow from the request message, which must outlive Predict() (not `done`).
  std::vector<RequestTensor> inputs;
  std::vector<std::string> outputs;  // requested names; empty: all
  absl::Time deadline = absl::InfiniteFuture();
  std::function<bool()> cancelled;
};

struct PredictResult {
  std::shared_ptr<const Servable> servable;  // the version that ran
  // Model output index of each tensor in `outputs`.
  std::vector<int> output_indices;
  std::vector<Tensor> outputs;
};

class Predictor {
 public:
  // `metrics` and `observer` may be null. All must outlive the predictor.
  Predictor(const ServableManager* manager, InferenceScheduler* scheduler, Metrics* metrics,
            InferenceObserver* observer = nullptr);

  // Validates on the calling thread and queues. `done` runs exactly once: inline for an
  // error found before queueing, else on a worker thread. A `call` that failed to decode
  // is answered (and counted) like any other refused request.
  void Predict(absl::StatusOr<PredictCall> call,
               std::function<void(absl::StatusOr<PredictResult>)> done);

  // From now on Predict answers UNAVAILABLE; work already queued still runs.
  void StartDraining() { draining_.store(true); }
  bool draining() const { return draining_.load(); }
  // Requests accepted and not yet answered.
  int inflight() const { return inflight_.load(); }
  // When the latest Predict call arrived (InfinitePast before the first): a drain waits
  // for the calls to stop before it shuts gRPC down.
  absl::Time last_arrival() const {
    const int64_t ns = last_arrival_ns_.load(std::memory_order_relaxed);
    return ns == 0 ? absl::InfinitePast() : absl::FromUnixNanos(ns);
  }

 private:
  const ServableManager* const manager_;
  InferenceScheduler* const scheduler_;
  Metrics* const metrics_;
  InferenceObserver* const observer_;
  std::atomic<bool> draining_{false};
  std::atomic<int> inflight_{0};
  std::atomic<int64_t> last_arrival_ns_{0};
};

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_PREDICTOR_H_
