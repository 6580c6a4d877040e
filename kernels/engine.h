// Compile once, run many: a Model becomes per-batch-size plans of oneDNN primitives
// (blocked layouts, BN folded into convolutions, fused post-ops, weights reordered once),
// executed by ExecutionContexts that each own their activation arena and scratchpad, so
// several contexts run concurrently from different threads without locks.
#ifndef NORMSERVE_KERNELS_ENGINE_H_
#define NORMSERVE_KERNELS_ENGINE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "kernels/channel_moments.h"
#include "kernels/model.h"
#include "kernels/tensor.h"

namespace normserve {

// How 3x3 stride-1 convolutions run.
enum class ConvAlgorithm {
  // Direct or Winograd, whichever is faster for the layer on this machine, timed once
  // when the batch-1 plan is built; other batch sizes reuse the choice.
  kAuto,
  kDirect,
  // Winograd wherever oneDNN has it.
  kWinograd,
};

struct CompileOptions {
  // OpenMP threads used by one execution (intra-op). 0: the OpenMP default.
  int intra_op_threads = 0;
  // Batch sizes whose plans are built by Compile(); others are built on first use.
  std::vector<int64_t> precompile_batch_sizes = {1};
  // Plans kept for batch sizes not precompiled (least recently built evicted).
  int max_cached_plans = 8;
  // Largest batch accepted by Run.
  int64_t max_batch = 64;
  // BN layers kept unfolded whose input moments Run records (statistics hooks).
  std::vector<std::string> observed_bn_layers;
  // With observed layers: stop the plan once the last observed layer's input is known
  // (outputs are then not produced).
  bool stop_after_observed = false;
  // Fusions can be turned off to test them against the unfused plan.
  bool fold_batch_norm = true;
  bool fuse_post_ops = true;
  // Ignored (direct) when observed_bn_layers is set: statistics must not depend on
  // the batching, and Winograd's rounding does.
  ConvAlgorithm conv_algorithm = ConvAlgorithm::kAuto;
};

// Observations of one Run: for each observed layer, one ChannelMoments per sample.
struct BnObservations {
  std::map<std::string, std::vector<ChannelMoments>> per_layer;
};

class Plan;
class CompiledModel;

class ExecutionContext {
 public:
  ~ExecutionContext();
  ExecutionContext(const ExecutionContext&) = delete;
  ExecutionContext& operator=(const ExecutionContext&) = delete;

  // Runs the model on `inputs` (one per model input, in order, float32 row-major). The
  // batch is inputs[0].shape[0]; every other dim must match the model. Not thread-safe:
  // one context per thread; contexts of one CompiledModel run concurrently.
  absl::Status Run(absl::Span<const TensorView> inputs, std::vector<Tensor>* outputs,
                   BnObservations* observations = nullptr);
  // As Run, but output i goes to outputs[i], which the caller sized for this batch (the
  // output's per-sample size times the batch): no allocation and no copy, for callers
  // that keep outputs in their own buffers.
  absl::Status RunInto(absl::Span<const TensorView> inputs, absl::Span<float* const> outputs,
                       BnObservations* observations = nullptr);

 private:
  friend class CompiledModel;
  struct Bound;
  explicit ExecutionContext(std::shared_ptr<const CompiledModel> model);
  absl::StatusOr<Bound*> BindPlan(int64_t batch);
  // Binds the inputs; the batch's plan in *bound.
  absl::Status BindInputs(absl::Span<const TensorView> inputs, Bound** bound);
  absl::Status Execute(Bound* b, BnObservations* observations);

  std::shared_ptr<const CompiledModel> model_;
  std::map<int64_t, std::unique_ptr<Bound>> bound_;  // per batch size
};

class CompiledModel : public std::enable_shared_from_this<CompiledModel> {
 public:
  static absl::StatusOr<std::shared_ptr<const CompiledModel>> Compile(
      std::shared_ptr<const Model> model, const CompileOptions& options = {});
  ~CompiledModel();

  const Model& model() const { return *model_; }
  std::shared_ptr<const Model> model_ptr() const { return model_; }
  const CompileOptions& options() const { return options_; }

  std::unique_ptr<ExecutionContext> NewContext() const;

  // The plan for `batch`, building it if needed (thread-safe; building happens outside
  // the lock so readers of existing plans never wait on a compile).
  absl::StatusOr<std::shared_ptr<const Plan>> PlanFor(int64_t batch) const;

  // Human-readable plan summary (one line per primitive) for batch 1.
  std::string DescribePlan() const;
  // Floating-point operations of one batch-1 run (convolutions, inner products, matmuls).
  double FlopsPerSample() const;

 private:
  CompiledModel(std::shared_ptr<const Model> model, const CompileOptions& options);

  std::shared_ptr<const Model> model_;
  CompileOptions options_;
  std::shared_ptr<const Plan> batch1_;  // immutable after Compile: read without a lock
  mutable absl::Mutex mu_;
  mutable std::map<int64_t, std::shared_ptr<const Plan>> plans_ ABSL_GUARDED_BY(mu_);
  mutable std::vector<int64_t> build_order_ ABSL_GUARDED_BY(mu_);
};

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_ENGINE_H_
