// Live drift watch: a sampled fraction of serving requests is copied (after the answer is
// computed, never changing it) into a bounded queue; one background thread runs each
// model's observed plan on them and feeds a shadow accumulator per model, whose drift
// from the serving version's frozen statistics is exported as normserve_live_drift_*.
// Dropping is always preferred to slowing serving down: a full queue drops (counted).
#ifndef NORMSERVE_SERVICE_TRAINING_LIVE_DRIFT_WATCH_H_
#define NORMSERVE_SERVICE_TRAINING_LIVE_DRIFT_WATCH_H_

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "kernels/engine.h"
#include "kernels/stats_accumulator.h"
#include "service/inference_observer.h"
#include "service/servable.h"
#include "service/training/training_metrics.h"

namespace normserve {

struct LiveDriftOptions {
  double fraction = 0;       // of serving requests sampled; 0: off
  int max_queue = 64;        // requests waiting for the watch thread
  int intra_op_threads = 1;  // the watch must not compete with serving for cores
  // Requests per window: the shadow accumulator restarts after this many, so the
  // gauges follow the recent traffic rather than everything since the version started.
  int64_t window = 1024;
  // Requests in the current window before its drift replaces the previous window's.
  int64_t min_requests = 32;
};

class LiveDriftWatch : public InferenceObserver {
 public:
  // `metrics` outlives the watch.
  LiveDriftWatch(LiveDriftOptions options, TrainingMetrics* metrics);
  ~LiveDriftWatch();
  LiveDriftWatch(const LiveDriftWatch&) = delete;
  LiveDriftWatch& operator=(const LiveDriftWatch&) = delete;

  // Whether this serving request should be copied (Bernoulli(fraction), lock-free).
  bool Sample() override;
  // Queues a copy of a served request's validated inputs. Never blocks.
  void Offer(std::shared_ptr<const Servable> servable, std::vector<Tensor> inputs) override;
  // Waits until everything offered so far has been processed (tests).
  void Flush();

 private:
  struct Item {
    std::shared_ptr<const Servable> servable;
    std::vector<Tensor> inputs;
  };
  // Per model: the serving version being watched and its window's accumulators.
  struct Shadow {
    uint64_t servable_id = 0;
    std::shared_ptr<const CompiledModel> observed;
    std::unique_ptr<ExecutionContext> context;
    std::vector<BnLayerInfo> layers;
    std::vector<BnStatistics> frozen;
    std::vector<LayerAccumulator> window;
  };

  void Loop();
  void Process(const Item& item);

  const LiveDriftOptions options_;
  TrainingMetrics* const metrics_;
  std::map<std::string, Shadow> shadows_;  // the watch thread's own

  absl::Mutex mu_;
  std::deque<Item> queue_ ABSL_GUARDED_BY(mu_);
  bool busy_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_TRAINING_LIVE_DRIFT_WATCH_H_
