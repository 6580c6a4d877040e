// Contexts made ahead of the requests; the lock guards a vector push/pop only, never a run.
#include "service/context_pool.h"

#include <algorithm>
#include <utility>

namespace normserve {
namespace {

// One run on zeros binds the context's memory for the primary plan. A model that fails
// on zeros is still served: the warm-up is an optimisation, requests report their errors.
void WarmUp(const CompiledModel& compiled, ExecutionContext* context) {
  std::vector<Tensor> inputs;
  for (const std::vector<int64_t>& shape : compiled.primary_shapes()) {
    Tensor t;
    t.shape = shape;
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    t.data.assign(static_cast<size_t>(n), 0.0f);
    inputs.push_back(std::move(t));
  }
  std::vector<TensorView> views;
  for (const Tensor& t : inputs) views.push_back({t.data.data(), t.shape});
  std::vector<Tensor> outputs;
  context->Run(views, &outputs).IgnoreError();
}

}  // namespace

ContextPool::ContextPool(std::shared_ptr<const CompiledModel> compiled, int prepared, bool warm)
    : compiled_(std::move(compiled)), prepared_(prepared > 0 ? prepared : 0) {
  std::vector<std::unique_ptr<ExecutionContext>> made;
  for (int i = 0; i < prepared_; ++i) {
    std::unique_ptr<ExecutionContext> context = compiled_->NewContext();
    if (context == nullptr) break;
    if (warm) WarmUp(*compiled_, context.get());
    made.push_back(std::move(context));
  }
  absl::MutexLock lock(&mu_);
  idle_ = std::move(made);
}

std::unique_ptr<ExecutionContext> ContextPool::Acquire() {
  {
    absl::MutexLock lock(&mu_);
    ++outstanding_;
    peak_outstanding_ = std::max(peak_outstanding_, outstanding_);
    if (!idle_.empty()) {
      std::unique_ptr<ExecutionContext> context = std::move(idle_.back());
      idle_.pop_back();
      return context;
    }
    ++created_on_demand_;
  }
  return compiled_->NewContext();
}

void ContextPool::Release(std::unique_ptr<ExecutionContext> context) {
  absl::MutexLock lock(&mu_);
  --outstanding_;
  if (context != nullptr &&
      static_cast<int>(idle_.size()) < std::max(prepared_, peak_outstanding_)) {
    idle_.push_back(std::move(context));
  }
}

int64_t ContextPool::created_on_demand() const {
  absl::MutexLock lock(&mu_);
  return created_on_demand_;
}

}  // namespace normserve
