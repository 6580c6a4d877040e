#include "kernels/engine.h"

#include <omp.h>

#include <cmath>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/activation_buffer.h"
#include "kernels/plan.h"
#include "kernels/specialize.h"
#include "kernels/status_macros.h"

namespace normserve {

// One plan bound to this context's memory: arena, scratchpad, memory objects and
// argument maps are created once, so a run allocates nothing but the outputs.
struct ExecutionContext::Bound {
  std::shared_ptr<const Plan> plan;
  ActivationBuffer arena;
  ActivationBuffer scratchpad;
  std::vector<dnnl::memory> mems;
  std::vector<std::unordered_map<int, dnnl::memory>> args;
  std::vector<int> input_refs, output_refs;
};

CompiledModel::CompiledModel(std::shared_ptr<const Model> model, const CompileOptions& options)
    : model_(std::move(model)), options_(options) {}

CompiledModel::~CompiledModel() = default;

absl::StatusOr<std::shared_ptr<const CompiledModel>> CompiledModel::Compile(
    std::shared_ptr<const Model> model, const CompileOptions& options) {
  if (model == nullptr) return absl::InvalidArgumentError("no model to compile");
  if (options.max_batch <= 0) return absl::InvalidArgumentError("max_batch must be positive");
  std::shared_ptr<CompiledModel> cm(new CompiledModel(std::move(model), options));
  // Timing the convolution algorithms should see the threads a run will use.
  if (options.intra_op_threads > 0) omp_set_num_threads(options.intra_op_threads);
  ASSIGN_OR_RETURN(cm->batch1_, BuildPlan(*cm->model_, InputShapesFor(cm->model_->graph(), 1), options));
  for (int64_t b : options.precompile_batch_sizes) {
    if (b == 1) continue;
    ASSIGN_OR_RETURN(auto plan, BuildPlan(*cm->model_, InputShapesFor(cm->model_->graph(), b), options, &cm->batch1_->winograd_convs));
    absl::MutexLock lock(&cm->mu_);
    cm->plans_[b] = std::move(plan);
  }
  return std::shared_ptr<const CompiledModel>(std::move(cm));
}

absl::StatusOr<std::shared_ptr<const Plan>> CompiledModel::PlanFor(int64_t batch) const {
  if (batch == 1) return batch1_;
  if (batch < 1 || batch > options_.max_batch) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch ", batch, " is outside [1, ", options_.max_batch, "]"));
  }
  {
    absl::MutexLock lock(&mu_);
    auto it = plans_.find(batch);
    if (it != plans_.end()) return it->second;
  }
  // Built outside the lock: a slow compile never blocks runs of other batch sizes.
  // The batch-1 choice of convolution algorithms holds for every batch, so a sample's
  // output does not depend on the batch it came in.
  ASSIGN_OR_RETURN(std::shared_ptr<const Plan> plan, BuildPlan(*model_, InputShapesFor(model_->graph(), batch), options_, &batch1_->winograd_convs));
  absl::MutexLock lock(&mu_);
  auto [it, inserted] = plans_.emplace(batch, plan);
  // Taken before eviction, which may erase `it` (max_cached_plans 0 caches nothing).
  std::shared_ptr<const Plan> result = it->second;
  if (inserted) {
    build_order_.push_back(batch);
    while (!build_order_.empty() && static_cast<int>(build_order_.size()) > options_.max_cached_plans) {
      plans_.erase(build_order_.front());
      build_order_.erase(build_order_.begin());
    }
  }
  return result;
}

std::unique_ptr<ExecutionContext> CompiledModel::NewContext() const {
  return std::unique_ptr<ExecutionContext>(new ExecutionContext(shared_from_this()));
}

std::string CompiledModel::DescribePlan() const {
  std::vector<std::string> lines;
  for (const auto& s : batch1_->steps) lines.push_back(s.what);
  lines.push_back(absl::StrCat("arena ", batch1_->arena_bytes, " bytes, scratchpad ", batch1_->scratchpad_bytes,
                               " bytes, ", batch1_->consts.size(), " constant tensors"));
  return absl::StrJoin(lines, "\n");
}

double CompiledModel::FlopsPerSample() const { return batch1_->flops; }

ExecutionContext::ExecutionContext(std::shared_ptr<const CompiledModel> model) : model_(std::move(model)) {}
ExecutionContext::~ExecutionContext() = default;

absl::StatusOr<ExecutionContext::Bound*> ExecutionContext::BindPlan(int64_t batch) {
  ASSIGN_OR_RETURN(std::shared_ptr<const Plan> plan, model_->PlanFor(batch));
  auto it = bound_.find(batch);
  if (it != bound_.end() && it->second->plan == plan) return it->second.get();
  auto b = std::make_unique<Bound>();
  b->plan = plan;
  b->arena = AllocateActivations(plan->arena_bytes);
  b->scratchpad = AllocateActivations(plan->scratchpad_bytes);
  if (!b->arena || !b->scratchpad) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", plan->arena_bytes, " bytes of activations"));
  }
  auto& eng = CpuEngine();
  b->input_refs.assign(plan->inputs.size(), -1);
  b->output_refs.assign(plan->outputs.size(), -1);
  for (size_t i = 0; i < plan->memrefs.size(); ++i) {
    const MemRef& r = plan->memrefs[i];
    switch (r.kind) {
      case MemRef::Kind::kArena:
        b->mems.emplace_back(r.md, eng, static_cast<char*>(b->arena.get()) + plan->buffer_offsets[r.index]);
        break;
      case MemRef::Kind::kConst:
        b->mems.push_back(plan->consts[r.index]);
        break;
      case MemRef::Kind::kScratchpad:
        b->mems.emplace_back(r.md, eng, b->scratchpad.get());
        break;
      case MemRef::Kind::kInput:
        b->input_refs[r.index] = static_cast<int>(i);
        b->mems.emplace_back(r.md, eng, nullptr);
        break;
      case MemRef::Kind::kOutput:
        b->output_refs[r.index] = static_cast<int>(i);
        b->mems.emplace_back(r.md, eng, nullptr);
        break;
    }
  }
  for (const PlanStep& s : plan->steps) {
    std::unordered_map<int, dnnl::memory> args;
    for (const auto& [arg, ref] : s.args) args.emplace(arg, b->mems[ref]);
    b->args.push_back(std::move(args));
  }
  Bound* raw = b.get();
  bound_[batch] = std::move(b);
  return raw;
}

absl::Status ExecutionContext::BindInputs(absl::Span<const TensorView> inputs, Bound** bound) {
  const Model& model = model_->model();
  if (inputs.size() != model.inputs().size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected ", model.inputs().size(), " input tensors, got ", inputs.size()));
  }
  if (inputs[0].shape.empty()) return absl::InvalidArgumentError("input tensor has rank 0; expected a batch dim");
  const int64_t batch = inputs[0].shape[0];
  if (batch < 1 || batch > model_->options().max_batch) {
    return absl::InvalidArgumentError(absl::StrCat("input \"", model.inputs()[0].name, "\": batch ", batch,
                                                   " is outside [1, ", model_->options().max_batch, "]"));
  }
  ASSIGN_OR_RETURN(Bound * b, BindPlan(batch));
  const Plan& plan = *b->plan;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].shape != plan.inputs[i].shape) {
      return absl::InvalidArgumentError(absl::StrCat("input \"", plan.inputs[i].name, "\": expected shape ",
                                                     ShapeToString(plan.inputs[i].shape), ", got ",
                                                     ShapeToString(inputs[i].shape)));
    }
    if (inputs[i].data == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("input \"", plan.inputs[i].name, "\" has no data"));
    }
    b->mems[b->input_refs[i]].set_data_handle(const_cast<float*>(inputs[i].data));
  }
  *bound = b;
  return absl::OkStatus();
}

absl::Status ExecutionContext::Run(absl::Span<const TensorView> inputs, std::vector<Tensor>* outputs,
                                   BnObservations* observations) {
  Bound* b = nullptr;
  RETURN_IF_ERROR(BindInputs(inputs, &b));
  const Plan& plan = *b->plan;
  if (outputs != nullptr) {
    outputs->resize(plan.outputs.size());
    for (size_t i = 0; i < plan.outputs.size(); ++i) {
      Tensor& t = (*outputs)[i];
      t.shape = plan.outputs[i].shape;
      int64_t n = 1;
      for (int64_t d : t.shape) n *= d;
      t.data.resize(n);
      b->mems[b->output_refs[i]].set_data_handle(t.data.data());
    }
  } else if (!plan.outputs.empty()) {
    return absl::InvalidArgumentError("outputs must not be null");
  }
  return Execute(b, observations);
}

absl::Status ExecutionContext::RunInto(absl::Span<const TensorView> inputs, absl::Span<float* const> outputs,
                                       BnObservations* observations) {
  Bound* b = nullptr;
  RETURN_IF_ERROR(BindInputs(inputs, &b));
  const Plan& plan = *b->plan;
  if (outputs.size() != plan.outputs.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected ", plan.outputs.size(), " output buffers, got ", outputs.size()));
  }
  for (size_t i = 0; i < outputs.size(); ++i) {
    if (outputs[i] == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("output \"", plan.outputs[i].name, "\" has no buffer"));
    }
    b->mems[b->output_refs[i]].set_data_handle(outputs[i]);
  }
  return Execute(b, observations);
}

absl::Status ExecutionContext::Execute(Bound* b, BnObservations* observations) {
  const Plan& plan = *b->plan;
  if (model_->options().intra_op_threads > 0) omp_set_num_threads(model_->options().intra_op_threads);
  try {
    dnnl::stream stream(CpuEngine());
    for (size_t s = 0; s < plan.steps.size(); ++s) {
      const PlanStep& step = plan.steps[s];
      if (step.custom) {
        step.custom(b->mems, observations);
      } else {
        step.primitive.execute(stream, b->args[s]);
      }
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("oneDNN execution failed: ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace normserve
