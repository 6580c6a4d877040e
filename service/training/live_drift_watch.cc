// Sampled serving requests -> shadow accumulators -> live drift gauges.
#include "service/training/live_drift_watch.h"

#include <cmath>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "service/log.h"

namespace normserve {

LiveDriftWatch::LiveDriftWatch(LiveDriftOptions options, TrainingMetrics* metrics)
    : options_(options), metrics_(metrics), thread_([this] { Loop(); }) {}

LiveDriftWatch::~LiveDriftWatch() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

bool LiveDriftWatch::Sample() {
  if (options_.fraction <= 0) return false;
  if (options_.fraction >= 1) return true;
  thread_local std::minstd_rand rng(std::random_device{}());
  return std::uniform_real_distribution<double>(0, 1)(rng) < options_.fraction;
}

void LiveDriftWatch::Offer(std::shared_ptr<const Servable> servable, std::vector<Tensor> inputs) {
  const std::string model = servable->name;
  bool queued = false;
  {
    absl::MutexLock lock(&mu_);
    if (!stop_ && static_cast<int>(queue_.size()) < options_.max_queue) {
      queue_.push_back(Item{std::move(servable), std::move(inputs)});
      queued = true;
    }
  }
  if (!queued && metrics_ != nullptr) metrics_->LiveDriftRequest(model, false);
}

void LiveDriftWatch::Flush() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](LiveDriftWatch* w)
           ABSL_EXCLUSIVE_LOCKS_REQUIRED(w->mu_) { return w->queue_.empty() && !w->busy_; },
      this));
}

void LiveDriftWatch::Loop() {
  while (true) {
    Item item;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](LiveDriftWatch* w)
               ABSL_EXCLUSIVE_LOCKS_REQUIRED(w->mu_) { return w->stop_ || !w->queue_.empty(); },
          this));
      if (stop_) return;
      item = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
    }
    Process(item);
    absl::MutexLock lock(&mu_);
    busy_ = false;
  }
}

void LiveDriftWatch::Process(const Item& item) {
  const Servable& s = *item.servable;
  // Nothing to watch (GroupNorm-only models, say): no shadow run, no empty window.
  if (s.model().bn_layers().empty()) return;
  Shadow& shadow = shadows_[s.name];
  if (shadow.servable_id != s.id) {
    // A new serving version: its own frozen statistics, a fresh window.
    Shadow next;
    next.servable_id = s.id;
    const CompileOptions options = LiveStatisticsOptions(s.model(), options_.intra_op_threads);
    for (const BnLayerInfo& l : s.model().bn_layers()) {
      next.layers.push_back(l);
      absl::StatusOr<BnStatistics> frozen = s.model().GetBnStatistics(l.name);
      next.frozen.push_back(frozen.ok() ? *frozen : BnStatistics{});
      next.window.emplace_back(l.channels);
    }
    absl::StatusOr<std::shared_ptr<const CompiledModel>> compiled =
        CompiledModel::Compile(s.compiled->model_ptr(), options);
    if (!compiled.ok()) {
      Log(LogLevel::kWarning, absl::StrCat("live drift watch: cannot compile ", s.name, " v",
                                           s.version, ": ", compiled.status().message()));
      if (metrics_ != nullptr) metrics_->LiveDriftRequest(s.name, false);
      return;
    }
    next.observed = *compiled;
    next.context = next.observed->NewContext();
    shadow = std::move(next);
  }
  std::vector<TensorView> views;
  for (const Tensor& t : item.inputs) views.push_back(TensorView{t.data.data(), t.shape});
  std::vector<Tensor> outputs;
  BnObservations observations;
  if (!shadow.context->Run(views, &outputs, &observations).ok()) {
    if (metrics_ != nullptr) metrics_->LiveDriftRequest(s.name, false);
    return;
  }
  if (shadow.window.empty() || shadow.window[0].requests() >= options_.window) {
    for (size_t i = 0; i < shadow.layers.size(); ++i)
      shadow.window[i] = LayerAccumulator(shadow.layers[i].channels);
  }
  // All layers finite, or nothing merged (as for training requests).
  for (size_t i = 0; i < shadow.layers.size(); ++i) {
    for (const ChannelMoments& m : observations.per_layer[shadow.layers[i].name]) {
      for (size_t c = 0; c < m.mean.size(); ++c) {
        if (!std::isfinite(m.mean[c]) || !std::isfinite(m.m2[c])) {
          if (metrics_ != nullptr) metrics_->LiveDriftRequest(s.name, false);
          return;
        }
      }
    }
  }
  for (size_t i = 0; i < shadow.layers.size(); ++i) {
    for (const ChannelMoments& m : observations.per_layer[shadow.layers[i].name]) {
      shadow.window[i].Add(m).IgnoreError();
    }
  }
  if (metrics_ == nullptr) return;
  metrics_->LiveDriftRequest(s.name, true);
  if (shadow.window[0].requests() < std::max<int64_t>(2, options_.min_requests)) return;
  std::vector<LiveDrift> drift;
  for (size_t i = 0; i < shadow.layers.size(); ++i) {
    const StatsDrift d = ComputeDrift(shadow.frozen[i], shadow.window[i].Mean(),
                                      shadow.window[i].UnbiasedVariance());
    drift.push_back(LiveDrift{shadow.layers[i].name, d.mean_shift, d.log_var_ratio, d.kl});
  }
  metrics_->SetLiveDrift(s.name, drift);
}

}  // namespace normserve
