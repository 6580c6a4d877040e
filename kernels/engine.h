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
#include "kernels/plan_cache.h"
#include "kernels/precision.h"
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
  // Batch sizes whose plans are built by Compile(), at the primary shape's other dims.
  std::vector<int64_t> precompile_batch_sizes = {1};
  // Full input shapes built by Compile() (models with dynamic dims other than the batch;
  // single-input models). The first one is the primary shape: DescribePlan, FlopsPerSample
  // and the Winograd choice come from it. Empty: the primary shape is batch 1 with every
  // other dynamic dim at kDefaultDynamicDim.
  std::vector<std::vector<int64_t>> precompile_shapes;
  // Bytes of plans (weights in their chosen layout, arena, scratchpad) kept for shapes that
  // were not precompiled; least recently used evicted. Precompiled plans do not count
  // against it.
  size_t plan_cache_bytes = size_t{1} << 30;
  // A batch size that was not precompiled runs as consecutive precompiled batches (samples
  // are independent with frozen statistics), so no client pays, or makes the server pay,
  // a compile for it. true: compile a plan for it instead (kept in the plan cache).
  bool compile_unlisted_batch_sizes = false;
  // Largest batch accepted by Run.
  int64_t max_batch = 64;
  // Largest value a dynamic dim other than the batch may take (e.g. an image side).
  int64_t max_dynamic_dim = 4096;
  // BN layers kept unfolded whose input moments Run records (statistics hooks).
  std::vector<std::string> observed_bn_layers;
  // With observed layers: stop the plan once the last observed layer's input is known
  // (outputs are then not produced).
  bool stop_after_observed = false;
  // With observed layers: Winograd for every convolution oneDNN has a Winograd kernel for
  // (not by timing, which is per process: a recovered session must reproduce its moments).
  // Its rounding depends on the batch, so Run then takes every sample at batch 1 (the
  // layer-wise commit replay, which batches, keeps direct convolutions).
  bool observed_winograd = false;
  // Fusions can be turned off to test them against the unfused plan.
  bool fold_batch_norm = true;
  bool fuse_post_ops = true;
  // Ignored (direct) when observed_bn_layers is set: statistics must not depend on
  // the batching, and Winograd's rounding does.
  ConvAlgorithm conv_algorithm = ConvAlgorithm::kAuto;
  // The arithmetic between inputs and outputs (precision.h). Compile refuses a precision
  // the CPU has no instructions for. Ignored (fp32) when observed_bn_layers is set: the
  // statistics a training commit replays must be those of the float32 network.
  Precision precision = Precision::kFp32;
  // bf16 plans: convolutions that read a graph input run in f32 (conv.cc says why). false
  // runs them in bf16 too, to test every operator's bf16 path on one-convolution models.
  bool input_convs_f32 = true;
};

// The precision plans of `options` are built in: fp32 for statistics plans.
Precision EffectivePrecision(const CompileOptions& options);

// The plan a training session's live pass and the live drift watch run: every BN layer's
// input observed, stopped after the last one, Winograd where faster with every sample at
// batch 1 (the layer-wise commit replay builds its own, direct, batched plans).
CompileOptions LiveStatisticsOptions(const Model& model, int intra_op_threads);

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
  absl::StatusOr<Bound*> Bind(std::shared_ptr<const Plan> plan);
  // The plans a run of `inputs` executes: the one for their shapes, or (a batch size that
  // was not precompiled, not observing) consecutive precompiled batch sizes.
  absl::StatusOr<std::vector<std::shared_ptr<const Plan>>> Schedule(
      absl::Span<const TensorView> inputs, bool observing);
  absl::Status RunPlans(const std::vector<std::shared_ptr<const Plan>>& plans,
                        absl::Span<const TensorView> inputs, absl::Span<float* const> outputs,
                        BnObservations* observations);
  absl::Status RunPlan(const std::shared_ptr<const Plan>& plan, absl::Span<const TensorView> inputs,
                       absl::Span<float* const> outputs, BnObservations* observations);
  absl::Status Execute(Bound* b, BnObservations* observations);

  std::shared_ptr<const CompiledModel> model_;
  // The plans this context has bound memory for, most recently used first; a few at most,
  // so a context's memory stays bounded however many shapes its model sees.
  std::vector<std::unique_ptr<Bound>> bound_;
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

  // The plan for concrete input shapes, building it if needed (thread-safe; building
  // happens outside the cache's lock so runs of existing plans never wait on a compile).
  // Fails naming the input and dim for shapes the model does not accept.
  absl::StatusOr<std::shared_ptr<const Plan>> PlanFor(const InputShapes& shapes) const;
  // The primary shape with its batch replaced by `batch`.
  absl::StatusOr<std::shared_ptr<const Plan>> PlanFor(int64_t batch) const;

  // Checks shapes against the model's inputs and the options' limits.
  absl::Status CheckShapes(const InputShapes& shapes) const;

  // The primary shape (see CompileOptions::precompile_shapes).
  const InputShapes& primary_shapes() const { return primary_shapes_; }
  // Human-readable plan summary (one line per primitive) for the primary shape.
  std::string DescribePlan() const;
  // Floating-point operations of one run at the primary shape, per sample.
  double FlopsPerSample() const;
  PlanCacheStats plan_cache_stats() const { return cache_->stats(); }

 private:
  friend class ExecutionContext;
  CompiledModel(std::shared_ptr<const Model> model, const CompileOptions& options);

  // Batch sizes precompiled at every shape (1 included), descending: how an unlisted
  // batch is split.
  std::vector<int64_t> chunk_sizes_;
  std::shared_ptr<const Model> model_;
  CompileOptions options_;
  InputShapes primary_shapes_;
  std::shared_ptr<const Plan> primary_;  // immutable after Compile: read without a lock
  std::unique_ptr<PlanCache> cache_;
};

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_ENGINE_H_
