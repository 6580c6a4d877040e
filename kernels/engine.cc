#include "kernels/engine.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>

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

namespace {

// Contexts keep this many bound plans (memory and argument maps) at most.
constexpr size_t kMaxBoundPlans = 4;

int64_t ElementsPerSample(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (size_t d = 1; d < shape.size(); ++d) n *= shape[d];
  return n;
}

}  // namespace

Precision EffectivePrecision(const CompileOptions& options) {
  return options.observed_bn_layers.empty() ? options.precision : Precision::kFp32;
}

CompileOptions LiveStatisticsOptions(const Model& model, int intra_op_threads) {
  CompileOptions options;
  options.intra_op_threads = intra_op_threads;
  options.stop_after_observed = true;
  options.observed_winograd = true;
  for (const BnLayerInfo& l : model.bn_layers()) options.observed_bn_layers.push_back(l.name);
  return options;
}

CompiledModel::CompiledModel(std::shared_ptr<const Model> model, const CompileOptions& options)
    : model_(std::move(model)), options_(options) {}

CompiledModel::~CompiledModel() = default;

absl::StatusOr<std::shared_ptr<const CompiledModel>> CompiledModel::Compile(
    std::shared_ptr<const Model> model, const CompileOptions& options) {
  if (model == nullptr) return absl::InvalidArgumentError("no model to compile");
  if (options.max_batch <= 0) return absl::InvalidArgumentError("max_batch must be positive");
  if (options.max_dynamic_dim <= 0)
    return absl::InvalidArgumentError("max_dynamic_dim must be positive");
  RETURN_IF_ERROR(
      CheckPrecisionSupported(EffectivePrecision(options), dnnl::get_effective_cpu_isa()));
  if (EffectivePrecision(options) == Precision::kInt8 && model->int8_convs() == 0) {
    return absl::FailedPreconditionError(
        "precision int8 needs a QDQ model (QuantizeLinear/DequantizeLinear with scales around "
        "its convolutions); this one has none: calibrate it first (QuantizeInt8 in "
        "kernels/int8_quantization.h writes that file from the float model and sample inputs) "
        "and serve the file it writes");
  }
  std::shared_ptr<CompiledModel> cm(new CompiledModel(std::move(model), options));
  const Graph& graph = cm->model_->graph();
  cm->primary_shapes_ =
      options.precompile_shapes.empty() ? InputShapesFor(graph, 1) : InputShapes();
  if (!options.precompile_shapes.empty()) {
    if (graph.inputs.size() != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "precompile_shapes needs a model with one input; this one has ", graph.inputs.size()));
    }
    cm->primary_shapes_ = {options.precompile_shapes[0]};
  }
  RETURN_IF_ERROR(cm->CheckShapes(cm->primary_shapes_));
  for (int64_t b : options.precompile_batch_sizes) {
    if (b < 1 || b > options.max_batch) {
      return absl::InvalidArgumentError(
          absl::StrCat("precompile batch size ", b, " is outside [1, ", options.max_batch, "]"));
    }
    cm->chunk_sizes_.push_back(b);
  }
  cm->chunk_sizes_.push_back(1);
  std::sort(cm->chunk_sizes_.begin(), cm->chunk_sizes_.end(), std::greater<int64_t>());
  cm->chunk_sizes_.erase(std::unique(cm->chunk_sizes_.begin(), cm->chunk_sizes_.end()),
                         cm->chunk_sizes_.end());

  // Timing the convolution algorithms should see the threads a run will use.
  if (options.intra_op_threads > 0) omp_set_num_threads(options.intra_op_threads);
  ASSIGN_OR_RETURN(cm->primary_, BuildPlan(*cm->model_, cm->primary_shapes_, options));
  // The primary plan's choice of convolution algorithms holds for every shape, so a
  // sample's output does not depend on the batch it came in. The builder must not own
  // the model (the cache lives inside it): it holds what it needs by value.
  const CompiledModel* self = cm.get();
  cm->cache_ =
      std::make_unique<PlanCache>(options.plan_cache_bytes, [self](const InputShapes& shapes) {
        return BuildPlan(*self->model_, shapes, self->options_, &self->primary_->winograd_convs);
      });
  cm->cache_->Pin(cm->primary_shapes_, cm->primary_);
  auto precompile = [&](const InputShapes& shapes) -> absl::Status {
    RETURN_IF_ERROR(cm->CheckShapes(shapes));
    ASSIGN_OR_RETURN(auto plan,
                     BuildPlan(*cm->model_, shapes, options, &cm->primary_->winograd_convs));
    cm->cache_->Pin(shapes, std::move(plan));
    return absl::OkStatus();
  };
  for (size_t i = 1; i < options.precompile_shapes.size(); ++i) {
    RETURN_IF_ERROR(precompile({options.precompile_shapes[i]}));
  }
  for (int64_t b : options.precompile_batch_sizes) {
    InputShapes shapes = cm->primary_shapes_;
    for (auto& s : shapes) s[0] = b;
    if (!cm->cache_->Contains(shapes)) RETURN_IF_ERROR(precompile(shapes));
  }
  return std::shared_ptr<const CompiledModel>(std::move(cm));
}

absl::Status CompiledModel::CheckShapes(const InputShapes& shapes) const {
  const std::vector<ValueSpec>& specs = model_->inputs();
  if (shapes.size() != specs.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected ", specs.size(), " input shapes, got ", shapes.size()));
  }
  for (size_t i = 0; i < specs.size(); ++i) {
    const ValueSpec& spec = specs[i];
    const std::vector<int64_t>& s = shapes[i];
    if (s.size() != spec.shape.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("input \"", spec.name, "\": expected rank ", spec.shape.size(), " ",
                       ShapeToString(spec.shape), ", got ", ShapeToString(s)));
    }
    for (size_t d = 0; d < s.size(); ++d) {
      if (spec.shape[d] >= 0) {
        if (s[d] != spec.shape[d]) {
          std::vector<int64_t> want = s;
          for (size_t k = 0; k < want.size(); ++k) {
            if (spec.shape[k] >= 0) want[k] = spec.shape[k];
          }
          return absl::InvalidArgumentError(absl::StrCat("input \"", spec.name,
                                                         "\": expected shape ", ShapeToString(want),
                                                         ", got ", ShapeToString(s)));
        }
        continue;
      }
      if (d == 0 && (s[d] < 1 || s[d] > options_.max_batch)) {
        return absl::InvalidArgumentError(absl::StrCat("input \"", spec.name, "\": batch ", s[d],
                                                       " is outside [1, ", options_.max_batch,
                                                       "] (max_batch)"));
      }
      if (d > 0 && (s[d] < 1 || s[d] > options_.max_dynamic_dim)) {
        return absl::InvalidArgumentError(
            absl::StrCat("input \"", spec.name, "\": dim ", d, " (", s[d], ") is outside [1, ",
                         options_.max_dynamic_dim, "] (max_dynamic_dim)"));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const Plan>> CompiledModel::PlanFor(
    const InputShapes& shapes) const {
  RETURN_IF_ERROR(CheckShapes(shapes));
  return cache_->Get(shapes);
}

absl::StatusOr<std::shared_ptr<const Plan>> CompiledModel::PlanFor(int64_t batch) const {
  InputShapes shapes = primary_shapes_;
  for (auto& s : shapes) {
    if (!s.empty()) s[0] = batch;
  }
  return PlanFor(shapes);
}

std::unique_ptr<ExecutionContext> CompiledModel::NewContext() const {
  return std::unique_ptr<ExecutionContext>(new ExecutionContext(shared_from_this()));
}

std::string CompiledModel::DescribePlan() const {
  std::vector<std::string> lines;
  for (const auto& s : primary_->steps) lines.push_back(s.what);
  if (primary_->precision != Precision::kFp32) {
    lines.push_back(absl::StrCat("precision ", PrecisionName(primary_->precision), ": ",
                                 primary_->type_conversions,
                                 " reorders convert between f32 and bf16, ",
                                 primary_->type_conversion_bytes, " bytes a run"));
  }
  lines.push_back(absl::StrCat("arena ", primary_->arena_bytes, " bytes, scratchpad ",
                               primary_->scratchpad_bytes, " bytes, ", primary_->consts.size(),
                               " constant tensors"));
  return absl::StrJoin(lines, "\n");
}

double CompiledModel::FlopsPerSample() const {
  return primary_->flops / static_cast<double>(std::max<int64_t>(1, primary_->batch));
}

ExecutionContext::ExecutionContext(std::shared_ptr<const CompiledModel> model)
    : model_(std::move(model)) {}
ExecutionContext::~ExecutionContext() = default;

absl::StatusOr<ExecutionContext::Bound*> ExecutionContext::Bind(std::shared_ptr<const Plan> plan) {
  for (size_t i = 0; i < bound_.size(); ++i) {
    if (bound_[i]->plan == plan) {
      std::rotate(bound_.begin(), bound_.begin() + i, bound_.begin() + i + 1);
      return bound_.front().get();
    }
  }
  auto b = std::make_unique<Bound>();
  b->plan = std::move(plan);
  const Plan& p = *b->plan;
  b->arena = AllocateActivations(p.arena_bytes);
  b->scratchpad = AllocateActivations(p.scratchpad_bytes);
  if (!b->arena || !b->scratchpad) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "cannot allocate ", p.arena_bytes + p.scratchpad_bytes, " bytes of activations"));
  }
  try {
    auto& eng = CpuEngine();
    b->input_refs.assign(p.inputs.size(), -1);
    b->output_refs.assign(p.outputs.size(), -1);
    for (size_t i = 0; i < p.memrefs.size(); ++i) {
      const MemRef& r = p.memrefs[i];
      switch (r.kind) {
        case MemRef::Kind::kArena:
          b->mems.emplace_back(r.md, eng,
                               static_cast<char*>(b->arena.get()) + p.buffer_offsets[r.index]);
          break;
        case MemRef::Kind::kConst:
          b->mems.push_back(p.consts[r.index]);
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
    for (const PlanStep& s : p.steps) {
      std::unordered_map<int, dnnl::memory> args;
      for (const auto& [arg, ref] : s.args) args.emplace(arg, b->mems[ref]);
      b->args.push_back(std::move(args));
    }
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("oneDNN cannot bind the plan's memory: ", e.what()));
  }
  if (bound_.size() >= kMaxBoundPlans) bound_.pop_back();
  bound_.insert(bound_.begin(), std::move(b));
  return bound_.front().get();
}

absl::StatusOr<std::vector<std::shared_ptr<const Plan>>> ExecutionContext::Schedule(
    absl::Span<const TensorView> inputs, bool observing) {
  const Model& model = model_->model();
  if (inputs.size() != model.inputs().size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected ", model.inputs().size(), " input tensors, got ", inputs.size()));
  }
  InputShapes shapes;
  for (const TensorView& t : inputs) {
    if (t.shape.empty())
      return absl::InvalidArgumentError("input tensor has rank 0; expected a batch dim");
    shapes.push_back(t.shape);
  }
  RETURN_IF_ERROR(model_->CheckShapes(shapes));
  const CompiledModel& cm = *model_;
  std::shared_ptr<const Plan> plan = cm.cache_->Find(shapes);
  const int64_t batch = shapes[0][0];
  // A Winograd statistics plan sees every sample at batch 1, so that its statistics do
  // not depend on how samples were batched (CompileOptions::observed_winograd).
  const bool per_sample = observing && cm.options_.observed_winograd;
  const bool chunk =
      batch > 1 &&
      (per_sample ||
       (plan == nullptr && !observing && !cm.options_.compile_unlisted_batch_sizes &&
        std::find(cm.chunk_sizes_.begin(), cm.chunk_sizes_.end(), batch) == cm.chunk_sizes_.end()));
  if (!chunk) {
    if (plan == nullptr) {
      ASSIGN_OR_RETURN(plan, cm.PlanFor(shapes));
    }
    return std::vector<std::shared_ptr<const Plan>>{std::move(plan)};
  }
  for (const auto& s : shapes) {
    if (s[0] != batch) {
      return absl::InvalidArgumentError(absl::StrCat("inputs have batches ", batch, " and ", s[0]));
    }
  }
  std::vector<std::shared_ptr<const Plan>> plans;
  for (int64_t done = 0; done < batch;) {
    int64_t size = 1;
    for (int64_t c : cm.chunk_sizes_) {
      if (!per_sample && c <= batch - done) {
        size = c;
        break;
      }
    }
    InputShapes part = shapes;
    for (auto& s : part) s[0] = size;
    ASSIGN_OR_RETURN(plan, cm.PlanFor(part));
    for (const ValueSpec& o : plan->outputs) {
      if (o.shape.empty() || o.shape[0] != size) {
        return absl::FailedPreconditionError(absl::StrCat(
            "output \"", o.name, "\" does not have the batch as its first dim, so batch ", batch,
            " cannot run as precompiled batches; precompile it or allow compiling unlisted batch "
            "sizes"));
      }
    }
    plans.push_back(std::move(plan));
    done += size;
  }
  return plans;
}

absl::Status ExecutionContext::Run(absl::Span<const TensorView> inputs,
                                   std::vector<Tensor>* outputs, BnObservations* observations) {
  ASSIGN_OR_RETURN(auto plans, Schedule(inputs, observations != nullptr));
  const std::vector<ValueSpec>& specs = plans[0]->outputs;
  if (outputs == nullptr) {
    if (!specs.empty()) return absl::InvalidArgumentError("outputs must not be null");
    return RunPlans(plans, inputs, {}, observations);
  }
  outputs->resize(specs.size());
  std::vector<float*> raw(specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    Tensor& t = (*outputs)[i];
    t.shape = specs[i].shape;
    if (plans.size() > 1) t.shape[0] = inputs[0].shape[0];
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    t.data.resize(n);
    raw[i] = t.data.data();
  }
  return RunPlans(plans, inputs, raw, observations);
}

absl::Status ExecutionContext::RunInto(absl::Span<const TensorView> inputs,
                                       absl::Span<float* const> outputs,
                                       BnObservations* observations) {
  ASSIGN_OR_RETURN(auto plans, Schedule(inputs, observations != nullptr));
  return RunPlans(plans, inputs, outputs, observations);
}

absl::Status ExecutionContext::RunPlans(const std::vector<std::shared_ptr<const Plan>>& plans,
                                        absl::Span<const TensorView> inputs,
                                        absl::Span<float* const> outputs,
                                        BnObservations* observations) {
  if (plans.size() == 1) return RunPlan(plans[0], inputs, outputs, observations);
  std::vector<TensorView> views(inputs.size());
  std::vector<float*> outs(outputs.size());
  int64_t done = 0;
  for (const auto& plan : plans) {
    for (size_t i = 0; i < inputs.size(); ++i) {
      views[i].shape = plan->inputs[i].shape;
      const int64_t per_sample = ElementsPerSample(views[i].shape);
      views[i].data = inputs[i].data == nullptr ? nullptr : inputs[i].data + done * per_sample;
    }
    for (size_t o = 0; o < outputs.size() && o < plan->outputs.size(); ++o) {
      const int64_t per_sample = ElementsPerSample(plan->outputs[o].shape);
      outs[o] = outputs[o] == nullptr ? nullptr : outputs[o] + done * per_sample;
    }
    BnObservations part;
    RETURN_IF_ERROR(RunPlan(plan, views, outs, observations != nullptr ? &part : nullptr));
    if (observations != nullptr) {
      for (auto& [layer, samples] : part.per_layer) {
        std::vector<ChannelMoments>& all = observations->per_layer[layer];
        all.insert(all.end(), std::make_move_iterator(samples.begin()),
                   std::make_move_iterator(samples.end()));
      }
    }
    done += plan->batch;
  }
  return absl::OkStatus();
}

absl::Status ExecutionContext::RunPlan(const std::shared_ptr<const Plan>& plan,
                                       absl::Span<const TensorView> inputs,
                                       absl::Span<float* const> outputs,
                                       BnObservations* observations) {
  ASSIGN_OR_RETURN(Bound * b, Bind(plan));
  const Plan& p = *plan;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].data == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("input \"", p.inputs[i].name, "\" has no data"));
    }
    b->mems[b->input_refs[i]].set_data_handle(const_cast<float*>(inputs[i].data));
  }
  if (outputs.size() != p.outputs.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected ", p.outputs.size(), " output buffers, got ", outputs.size()));
  }
  for (size_t i = 0; i < outputs.size(); ++i) {
    if (outputs[i] == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("output \"", p.outputs[i].name, "\" has no buffer"));
    }
    b->mems[b->output_refs[i]].set_data_handle(outputs[i]);
  }
  return Execute(b, observations);
}

absl::Status ExecutionContext::Execute(Bound* b, BnObservations* observations) {
  const Plan& plan = *b->plan;
  if (model_->options().intra_op_threads > 0)
    omp_set_num_threads(model_->options().intra_op_threads);
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
