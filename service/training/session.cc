// Training session: accumulate (compute outside the lock, log + merge under it), report,
// exact commit, rebase, recovery from the sample log.
#include "service/training/session.h"

#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <sstream>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "kernels/status_macros.h"
#include "service/log.h"
#include "service/training/version_publisher.h"

namespace normserve {
namespace fs = std::filesystem;
namespace {

constexpr char kLogFile[] = "samples.wal";
constexpr char kManifestFile[] = "manifest";

bool AllFinite(const std::vector<double>& v) {
  for (double x : v) {
    if (!std::isfinite(x)) return false;
  }
  return true;
}

bool ValidRequestId(const std::string& id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    if (c < ' ' || c > '~') return false;
  }
  return true;
}

std::string FormatDouble(double v) {
  std::ostringstream s;
  s.precision(17);
  s << v;
  return s.str();
}

// A record that failed to write or sync: refused, and safe to retry under the same id.
absl::Status NotDurable(const absl::Status& cause) {
  return absl::UnavailableError(absl::StrCat(
      "sample not durable, not applied (retry with the same request_id): ", cause.message()));
}

}  // namespace

absl::Status FaultPoint(const FaultHook& hook, absl::string_view step) {
  if (!hook) return absl::OkStatus();
  return hook(step);
}

std::string SerializeManifest(const SessionConfig& c) {
  return absl::StrCat("id=", c.id, "\nmodel=", c.model, "\nbase_version=", c.base_version,
                      "\nmin_values_per_channel=", c.min_values_per_channel,
                      "\nmax_relative_sem=", FormatDouble(c.max_relative_sem),
                      "\nprior_strength=", FormatDouble(c.prior_strength),
                      "\nmax_samples=", c.max_samples, "\nstate=", c.state,
                      "\npublished_version=", c.published_version, "\n");
}

absl::StatusOr<SessionConfig> ParseManifest(const std::string& text) {
  SessionConfig c;
  int seen = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    const size_t eq = line.find('=');
    if (eq == absl::string_view::npos)
      return absl::DataLossError(absl::StrCat("bad line \"", line, "\""));
    const absl::string_view key = line.substr(0, eq);
    const std::string value(line.substr(eq + 1));
    bool ok = true;
    if (key == "id") {
      c.id = value;
    } else if (key == "model") {
      c.model = value;
    } else if (key == "base_version") {
      ok = absl::SimpleAtoi(value, &c.base_version);
    } else if (key == "min_values_per_channel") {
      ok = absl::SimpleAtoi(value, &c.min_values_per_channel);
    } else if (key == "max_relative_sem") {
      ok = absl::SimpleAtod(value, &c.max_relative_sem);
    } else if (key == "prior_strength") {
      ok = absl::SimpleAtod(value, &c.prior_strength);
    } else if (key == "max_samples") {
      ok = absl::SimpleAtoi(value, &c.max_samples);
    } else if (key == "state") {
      c.state = value;
    } else if (key == "published_version") {
      ok = absl::SimpleAtoi(value, &c.published_version);
    } else {
      continue;  // newer fields: ignored
    }
    if (!ok) return absl::DataLossError(absl::StrCat("bad value for ", key, ": \"", value, "\""));
    ++seen;
  }
  if (seen < 9 || c.id.empty() || c.model.empty() || c.base_version <= 0) {
    return absl::DataLossError("manifest is incomplete");
  }
  return c;
}

LayerSummary SummarizeLayer(const BnLayerInfo& info, const LayerAccumulator& acc,
                            const BnStatistics& frozen) {
  LayerSummary s;
  s.info = info;
  s.frozen = frozen;
  s.requests = acc.requests();
  s.values_per_channel = acc.values_per_channel();
  s.mean = acc.Mean();
  s.variance = acc.UnbiasedVariance();
  s.standard_error = acc.StandardError();
  s.relative_standard_error = acc.RelativeStandardError();
  const double inf = std::numeric_limits<double>::infinity();
  double max = 0, sum = 0;
  for (double r : s.relative_standard_error) {
    // Undefined (fewer than 2 requests, or zero variance): worse than any limit.
    const double v = std::isfinite(r) ? r : inf;
    max = std::max(max, v);
    sum += v;
  }
  s.max_relative_sem = s.relative_standard_error.empty() ? inf : max;
  s.mean_relative_sem = s.relative_standard_error.empty()
                            ? inf
                            : sum / static_cast<double>(s.relative_standard_error.size());
  if (s.requests > 0 && !frozen.mean.empty()) s.drift = ComputeDrift(frozen, s.mean, s.variance);
  return s;
}

void ApplyGate(int64_t min_values, double max_rsem, SessionSummary* summary) {
  summary->gate_passed = !summary->layers.empty();
  for (LayerSummary& l : summary->layers) {
    std::vector<std::string> why;
    if (l.values_per_channel < min_values) {
      why.push_back(absl::StrCat(l.values_per_channel, " values per channel < ", min_values));
    }
    if (!(l.max_relative_sem <= max_rsem)) {
      why.push_back(absl::StrCat("max relative SEM ", l.max_relative_sem, " > ", max_rsem));
    }
    l.gate_passed = why.empty();
    l.gate_reason = absl::StrJoin(why, ", ");
    summary->gate_passed = summary->gate_passed && l.gate_passed;
  }
}

std::string GateFailures(const SessionSummary& summary) {
  std::vector<std::string> parts;
  for (const LayerSummary& l : summary.layers) {
    if (!l.gate_passed)
      parts.push_back(absl::StrCat("layer \"", l.info.name, "\": ", l.gate_reason));
  }
  return absl::StrJoin(parts, "; ");
}

Session::Session(SessionConfig config, std::string dir, SessionEnv env)
    : id_(config.id),
      model_(config.model),
      dir_(std::move(dir)),
      env_(std::move(env)),
      config_(config),
      base_version_(config.base_version) {}

absl::StatusOr<std::shared_ptr<const Session::Base>> Session::MakeBase(
    std::shared_ptr<const Model> model, const SessionEnv& env, uint64_t generation) {
  if (model->inputs().size() != 1) {
    return absl::UnimplementedError(absl::StrCat(
        "training needs a single-input model; this one has ", model->inputs().size(), " inputs"));
  }
  if (model->bn_layers().empty()) {
    // The usual cause: torch.onnx.export's default training=TrainingMode.EVAL folds every
    // BatchNorm into the preceding convolution, leaving no statistics to recalibrate.
    return absl::FailedPreconditionError(
        "the model has no BatchNormalization layer to train; a PyTorch export with "
        "training=torch.onnx.TrainingMode.EVAL (the default) folds them into the convolutions: "
        "export with training=torch.onnx.TrainingMode.PRESERVE and the model in eval mode");
  }
  auto base = std::make_shared<Base>();
  base->model = model;
  base->generation = generation;
  CompileOptions options = LiveStatisticsOptions(*model, env.intra_op_threads);
  options.max_batch = env.max_batch;
  for (const BnLayerInfo& l : model->bn_layers()) {
    ASSIGN_OR_RETURN(BnStatistics frozen, model->GetBnStatistics(l.name));
    base->frozen.push_back(std::move(frozen));
  }
  ASSIGN_OR_RETURN(base->observed, CompiledModel::Compile(model, options));
  if (env.scheduler != nullptr) {
    auto queued = std::make_shared<Servable>();
    queued->name = "training";
    queued->compiled = base->observed;
    queued->performance_hint = PerformanceHint::kThroughput;
    ASSIGN_OR_RETURN(queued->variants, BuildStreamVariants(model, base->observed, options,
                                                           /*halve=*/false, env.servable));
    queued->loaded_at = absl::Now();
    base->queued = std::move(queued);
  }
  return std::shared_ptr<const Base>(std::move(base));
}

absl::StatusOr<std::shared_ptr<Session>> Session::Create(
    SessionConfig config, std::string dir, std::shared_ptr<const Model> base, SessionEnv env,
    const std::function<absl::Status()>& materialize) {
  // Compile before anything reaches the disk: a plan that fails leaves no directory.
  ASSIGN_OR_RETURN(std::shared_ptr<const Base> b, MakeBase(std::move(base), env, 1));
  if (materialize) RETURN_IF_ERROR(materialize());
  std::shared_ptr<Session> s(new Session(std::move(config), std::move(dir), env));
  ASSIGN_OR_RETURN(std::unique_ptr<SampleLog> log, SampleLog::Open(s->dir_ + "/" + kLogFile));
  RETURN_IF_ERROR(FsyncDirectory(s->dir_));
  absl::MutexLock lock(&s->mu_);
  s->base_ = std::move(b);
  s->log_ = std::move(log);
  for (const BnLayerInfo& l : s->base_->model->bn_layers()) s->live_.emplace_back(l.channels);
  s->ExportMetricsLocked();
  return s;
}

absl::StatusOr<std::shared_ptr<Session>> Session::Recover(SessionConfig config, std::string dir,
                                                          std::shared_ptr<const Model> base,
                                                          SessionEnv env) {
  ASSIGN_OR_RETURN(std::shared_ptr<const Base> b, MakeBase(std::move(base), env, 1));
  std::shared_ptr<Session> s(new Session(std::move(config), std::move(dir), env));
  const std::string log_path = s->dir_ + "/" + kLogFile;
  ASSIGN_OR_RETURN(SampleLogRecovery rec, SampleLog::Recover(log_path));
  if (rec.torn_tail) {
    Log(LogLevel::kWarning,
        absl::StrCat("training session ", s->id_, ": truncated a torn tail of ", rec.torn_bytes,
                     " bytes from ", log_path, " (an append that was never acknowledged)"));
    if (env.metrics != nullptr) env.metrics->WalTornTail();
  }
  ASSIGN_OR_RETURN(std::unique_ptr<SampleLog> log, SampleLog::Open(log_path));
  absl::MutexLock lock(&s->mu_);
  s->base_ = b;
  s->log_ = std::move(log);
  for (const BnLayerInfo& l : b->model->bn_layers()) s->live_.emplace_back(l.channels);
  for (SampleRecord& r : rec.records) {
    if (r.inputs.size() != 1 || r.inputs[0].shape.empty()) {
      rec.corrupt = true;
      rec.corrupt_reason = absl::StrCat("record \"", r.request_id, "\" has no usable input");
      break;
    }
    // A record appended twice (durable, then the call failed before acknowledging and
    // the client retried) counts once: exactly-once holds across restarts too.
    if (!s->request_ids_.insert(r.request_id).second) continue;
    s->requests_accepted_ += r.inputs[0].shape[0];
    s->samples_.push_back(std::move(r.inputs[0]));
  }
  if (rec.corrupt) {
    s->corrupt_ =
        absl::StrCat(log_path, " at offset ", rec.corrupt_offset, ": ", rec.corrupt_reason);
    Log(LogLevel::kError, absl::StrCat("training session ", s->id_, ": sample log is corrupt: ",
                                       s->corrupt_, "; the session refuses Accumulate and Commit"));
  }
  ASSIGN_OR_RETURN(s->live_, s->ReplayLocked(*s->base_));
  s->ExportMetricsLocked();
  return s;
}

std::unique_ptr<ExecutionContext> Session::TakeContext(const Base& base) {
  {
    absl::MutexLock lock(&pool_mu_);
    if (pool_generation_ != base.generation) {
      pool_.clear();
      pool_generation_ = base.generation;
    }
    if (!pool_.empty()) {
      std::unique_ptr<ExecutionContext> ctx = std::move(pool_.back());
      pool_.pop_back();
      return ctx;
    }
  }
  return base.observed->NewContext();
}

void Session::ReturnContext(const Base& base, std::unique_ptr<ExecutionContext> ctx) {
  absl::MutexLock lock(&pool_mu_);
  if (pool_generation_ == base.generation && pool_.size() < 8) pool_.push_back(std::move(ctx));
}

absl::StatusOr<Session::Moments> Session::ComputeMoments(const Base& base,
                                                         absl::Span<const Tensor> inputs,
                                                         bool queue) {
  BnObservations observations;
  if (queue && base.queued != nullptr) {
    // The serving scheduler's FIFO and core budget: a training pass never adds threads
    // beyond what serving may use, and waits its turn like a Predict.
    absl::Notification finished;
    absl::StatusOr<InferenceResult> result = absl::UnknownError("not run");
    InferenceTask task;
    task.servable = base.queued;
    task.inputs.assign(inputs.begin(), inputs.end());
    task.observe = true;
    task.done = [&](absl::StatusOr<InferenceResult> r) {
      result = std::move(r);
      finished.Notify();
    };
    RETURN_IF_ERROR(env_.scheduler->Submit(std::move(task)));
    finished.WaitForNotification();
    RETURN_IF_ERROR(result.status());
    observations = std::move(result->observations);
  } else {
    std::vector<TensorView> views;
    for (const Tensor& t : inputs) views.push_back(TensorView{t.data.data(), t.shape});
    std::vector<Tensor> outputs;
    std::unique_ptr<ExecutionContext> ctx = TakeContext(base);
    absl::Status s = ctx->Run(views, &outputs, &observations);
    ReturnContext(base, std::move(ctx));
    RETURN_IF_ERROR(s);
  }
  const auto& layers = base.model->bn_layers();
  Moments m;
  m.per_layer.resize(layers.size());
  for (size_t i = 0; i < layers.size(); ++i) {
    auto it = observations.per_layer.find(layers[i].name);
    if (it == observations.per_layer.end()) {
      return absl::InternalError(
          absl::StrCat("BN layer \"", layers[i].name, "\" was not observed"));
    }
    for (size_t b = 0; b < it->second.size(); ++b) {
      const ChannelMoments& cm = it->second[b];
      if (!AllFinite(cm.mean) || !AllFinite(cm.m2)) {
        // OUT_OF_RANGE marks this refusal for the caller; it becomes INVALID_ARGUMENT.
        return absl::OutOfRangeError(absl::StrCat(
            "sample ", b, ": the input of BN layer \"", layers[i].name,
            "\" is non-finite (the activations overflowed); the request is refused whole"));
      }
    }
    m.per_layer[i] = std::move(it->second);
  }
  return m;
}

void Session::MergeLocked(const Moments& moments) {
  for (size_t i = 0; i < moments.per_layer.size(); ++i) {
    for (const ChannelMoments& cm : moments.per_layer[i]) {
      // Checked finite with the right channel count: Add cannot refuse here.
      live_[i].Add(cm).IgnoreError();
    }
  }
}

absl::StatusOr<std::vector<LayerAccumulator>> Session::ReplayLocked(const Base& base) {
  std::vector<LayerAccumulator> live;
  for (const BnLayerInfo& l : base.model->bn_layers()) live.emplace_back(l.channels);
  for (const Tensor& t : samples_) {
    absl::StatusOr<Moments> m = ComputeMoments(base, absl::MakeConstSpan(&t, 1));
    if (!m.ok()) {
      return absl::DataLossError(absl::StrCat(
          "session ", id_, ": a kept sample cannot be replayed: ", m.status().message()));
    }
    for (size_t i = 0; i < m->per_layer.size(); ++i) {
      // Checked finite with the right channel count: Add cannot refuse here.
      for (const ChannelMoments& cm : m->per_layer[i]) live[i].Add(cm).IgnoreError();
    }
  }
  return live;
}

absl::Status Session::UsableLocked() const {
  if (aborted_) {
    return absl::NotFoundError(absl::StrCat("training session \"", id_, "\" was aborted"));
  }
  if (!corrupt_.empty()) {
    return absl::DataLossError(absl::StrCat("session ", id_, ": sample log ", corrupt_,
                                            "; nothing after it is used; Abort the session"));
  }
  if (config_.state != "open") {
    return absl::FailedPreconditionError(absl::StrCat(
        "session ", id_, " is already committed (as version ", config_.published_version, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<AccumulateOutcome> Session::Accumulate(const std::string& request_id,
                                                      absl::Span<const RequestTensor> inputs) {
  TrainingMetrics* metrics = env_.metrics;
  auto refuse = [&](TrainingMetrics::Refusal reason, absl::Status status) {
    if (metrics != nullptr) metrics->Refused(model_, reason);
    absl::MutexLock lock(&mu_);
    ++requests_refused_;
    return status;
  };
  if (!ValidRequestId(request_id)) {
    return refuse(
        TrainingMetrics::Refusal::kInvalidInput,
        absl::InvalidArgumentError("request_id must be 1 to 128 printable ASCII characters"));
  }
  std::shared_ptr<const Base> base;
  {
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(UsableLocked());
    if (request_ids_.contains(request_id)) {
      if (metrics != nullptr) metrics->RequestDuplicate(model_, id_);
      return AccumulateOutcome{true, requests_accepted_};
    }
    base = base_;
  }
  ValidationOptions validation;
  validation.max_batch = env_.max_batch;
  absl::StatusOr<std::vector<Tensor>> tensors =
      ValidateInputs(base->model->inputs(), inputs, validation);
  if (!tensors.ok()) {
    validation.allow_non_finite = true;
    const bool only_non_finite = ValidateInputs(base->model->inputs(), inputs, validation).ok();
    return refuse(only_non_finite ? TrainingMetrics::Refusal::kNonFiniteInput
                                  : TrainingMetrics::Refusal::kInvalidInput,
                  tensors.status());
  }
  const int64_t n = (*tensors)[0].shape[0];
  // Encoded (copied and checksummed) outside the lock: for a 224x224 input that is the
  // larger part of the record's cost, and every writer queues on the lock.
  SampleRecord record{request_id, *std::move(tensors)};
  const std::string encoded = EncodeSampleRecord(record);
  while (true) {
    absl::StatusOr<Moments> moments = ComputeMoments(*base, record.inputs, /*queue=*/true);
    if (!moments.ok()) {
      if (moments.status().code() == absl::StatusCode::kOutOfRange) {
        return refuse(TrainingMetrics::Refusal::kNonFiniteActivation,
                      absl::InvalidArgumentError(moments.status().message()));
      }
      return moments.status();
    }
    absl::MutexLock lock(&mu_);
    // A drain (Commit, Rebase, Abort) goes first; a retry of a pending id waits for the
    // first attempt's sync, whose outcome decides whether this one is a duplicate.
    auto may_write = [this, &request_id]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
      return draining_ == 0 && !pending_ids_.contains(request_id);
    };
    mu_.Await(absl::Condition(&may_write));
    RETURN_IF_ERROR(UsableLocked());
    if (request_ids_.contains(request_id)) {  // a concurrent retry won the race
      if (metrics != nullptr) metrics->RequestDuplicate(model_, id_);
      return AccumulateOutcome{true, requests_accepted_};
    }
    if (base_ != base) {  // rebased while we computed: recompute on the new base
      base = base_;
      continue;
    }
    if (requests_accepted_ + pending_samples_ + n > config_.max_samples) {
      ++requests_refused_;
      if (metrics != nullptr) metrics->Refused(model_, TrainingMetrics::Refusal::kLimit);
      return absl::ResourceExhaustedError(absl::StrCat(
          "session ", id_, " keeps at most max_samples=", config_.max_samples,
          " samples for the exact commit (", requests_accepted_ + pending_samples_,
          " kept or being written, this request has ", n, "); commit or start a new session"));
    }
    // Durable first: only a record that is on disk may change the statistics.
    if (absl::Status s = log_->Write(encoded); !s.ok()) {
      if (metrics != nullptr) metrics->WalFsyncFailure();
      Log(LogLevel::kError, absl::StrCat("training session ", id_, ": ", s.message()));
      return NotDurable(s);
    }
    WalTicket ticket;
    pending_.push_back(PendingRecord{request_id, n, *std::move(moments),
                                     std::move(record.inputs[0]), log_->written_size(), &ticket});
    pending_ids_.insert(request_id);
    pending_samples_ += n;
    while (!ticket.done) {
      if (!syncing_) {
        SyncPendingLocked();
        continue;
      }
      auto settled = [this, &ticket]()
                         ABSL_NO_THREAD_SAFETY_ANALYSIS { return ticket.done || !syncing_; };
      mu_.Await(absl::Condition(&settled));
    }
    RETURN_IF_ERROR(ticket.status);
    return AccumulateOutcome{false, ticket.requests_accepted};
  }
}

void Session::SyncPendingLocked() {
  syncing_ = true;
  // Stays valid with mu_ released: the log is only replaced after DrainPendingLocked,
  // which waits for this sync.
  SampleLog* const log = log_.get();
  const int64_t covered = log->written_size();
  mu_.Unlock();
  absl::Status synced = log->SyncData();
  mu_.Lock();
  syncing_ = false;
  TrainingMetrics* metrics = env_.metrics;
  if (metrics != nullptr) metrics->WalSynced();
  if (!synced.ok()) {
    // Whatever was written since the last good sync is cut, so every pending record
    // fails, including those written while this sync ran.
    if (absl::Status cut = log->DropUnsynced(); !cut.ok()) {
      synced = absl::InternalError(absl::StrCat(synced.message(), "; and ", cut.message()));
    }
    if (metrics != nullptr) metrics->WalFsyncFailure();
    Log(LogLevel::kError, absl::StrCat("training session ", id_, ": ", synced.message(), " (",
                                       pending_.size(), " pending records not applied)"));
    const absl::Status refused = NotDurable(synced);
    for (PendingRecord& p : pending_) {
      p.ticket->status = refused;
      p.ticket->done = true;
    }
    pending_.clear();
    pending_ids_.clear();
    pending_samples_ = 0;
    return;
  }
  log->MarkSynced(covered);
  bool applied = false;
  while (!pending_.empty() && pending_.front().log_end <= covered) {
    PendingRecord p = std::move(pending_.front());
    pending_.pop_front();
    pending_ids_.erase(p.request_id);
    pending_samples_ -= p.samples;
    // Durable but unacknowledged here: recovery applies it, a retry is a duplicate.
    if (absl::Status fault = FaultPoint(env_.fault_hook, "accumulate.logged"); !fault.ok()) {
      p.ticket->status = fault;
      p.ticket->done = true;
      continue;
    }
    MergeLocked(p.moments);
    request_ids_.insert(p.request_id);
    samples_.push_back(std::move(p.input));
    requests_accepted_ += p.samples;
    if (metrics != nullptr) metrics->RequestsAccepted(model_, id_, p.samples);
    p.ticket->requests_accepted = requests_accepted_;
    p.ticket->done = true;
    applied = true;
  }
  // Once per group: the summary behind the metrics walks every channel of every layer.
  if (applied) ExportMetricsLocked();
}

void Session::DrainPendingLocked() {
  ++draining_;
  while (!pending_.empty() || syncing_) {
    if (!syncing_) {
      SyncPendingLocked();
      continue;
    }
    auto idle = [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return !syncing_; };
    mu_.Await(absl::Condition(&idle));
  }
  --draining_;
}

SessionSummary Session::LiveSummaryLocked() const {
  SessionSummary s;
  s.config = config_;
  s.requests_accepted = requests_accepted_;
  s.requests_refused = requests_refused_;
  s.samples_kept = static_cast<int64_t>(samples_.size());
  if (base_ == nullptr) return s;
  const auto& layers = base_->model->bn_layers();
  for (size_t i = 0; i < layers.size() && i < live_.size(); ++i) {
    s.layers.push_back(SummarizeLayer(layers[i], live_[i], base_->frozen[i]));
  }
  ApplyGate(config_.min_values_per_channel, config_.max_relative_sem, &s);
  return s;
}

absl::StatusOr<SessionSummary> Session::ExactSummaryLocked(const std::string& operation) const {
  if (samples_.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("session ", id_, " has no accepted samples"));
  }
  CalibrationOptions options;
  options.intra_op_threads = env_.intra_op_threads;
  options.prior_strength = config_.prior_strength;
  options.max_cached_bytes = env_.commit_cache_bytes;
  {
    absl::MutexLock lock(&progress_mu_);
    progress_ = ReplayProgress{true, operation, {}, absl::Now(), absl::InfinitePast()};
  }
  options.on_progress = [this](const CalibrationProgress& p) {
    {
      absl::MutexLock lock(&progress_mu_);
      progress_.calibration = p;
    }
    // Observation only (nothing durable happened): lets a test read Progress() while the
    // replay holds the session's lock.
    (void)FaultPoint(env_.fault_hook, "replay.progress");
  };
  absl::StatusOr<CalibrationResult> calibrated =
      CalibrateLayerwise(base_->model, samples_, options);
  {
    absl::MutexLock lock(&progress_mu_);
    progress_.running = false;
    progress_.finished = absl::Now();
  }
  if (!calibrated.ok()) return calibrated.status();
  const CalibrationResult& result = *calibrated;
  SessionSummary s;
  s.config = config_;
  s.requests_accepted = requests_accepted_;
  s.requests_refused = requests_refused_;
  s.samples_kept = static_cast<int64_t>(samples_.size());
  s.exact = true;
  for (const CalibratedLayer& l : result.layers) {
    s.layers.push_back(SummarizeLayer(l.info, l.accumulator, l.frozen));
  }
  s.committed_model = result.model;
  ApplyGate(config_.min_values_per_channel, config_.max_relative_sem, &s);
  return s;
}

void Session::ExportMetricsLocked() const {
  if (env_.metrics == nullptr || config_.state != "open" || aborted_) return;
  const SessionSummary s = LiveSummaryLocked();
  std::vector<LayerQuality> q;
  for (const LayerSummary& l : s.layers) {
    q.push_back(LayerQuality{l.info.name, static_cast<double>(l.values_per_channel),
                             l.max_relative_sem, l.mean_relative_sem, l.drift.mean_shift,
                             l.drift.log_var_ratio, l.drift.kl});
  }
  env_.metrics->SetSessionQuality(model_, id_, q, s.gate_passed);
}

absl::StatusOr<SessionSummary> Session::Report(bool exact) {
  absl::MutexLock lock(&mu_);
  if (aborted_) return UsableLocked();
  if (exact) {
    if (!corrupt_.empty()) return UsableLocked();
    return ExactSummaryLocked("report");
  }
  return LiveSummaryLocked();
}

ReplayProgress Session::Progress() const {
  absl::MutexLock lock(&progress_mu_);
  return progress_;
}

absl::StatusOr<SessionSummary> Session::Commit(const PublishFn& publish) {
  absl::MutexLock lock(&mu_);
  DrainPendingLocked();
  RETURN_IF_ERROR(UsableLocked());
  ASSIGN_OR_RETURN(SessionSummary summary, ExactSummaryLocked("commit"));
  ASSIGN_OR_RETURN(int64_t version, publish(config_, summary, samples_));
  SessionConfig next = config_;
  next.state = "committed";
  next.published_version = version;
  // The version is published whatever happens here; a failure only means a restart
  // shows the session open again, where a second Commit is refused as stale-base.
  if (absl::Status s = WriteFileAtomically(dir_ + "/" + kManifestFile, SerializeManifest(next));
      !s.ok()) {
    Log(LogLevel::kError, absl::StrCat("training session ", id_, ": published v", version,
                                       " but cannot mark the session committed: ", s.message()));
  }
  config_ = next;
  summary.config = next;
  log_.reset();
  // The version is published: a failure from here on is not the caller's (logged only).
  if (absl::Status s = FaultPoint(env_.fault_hook, "commit.manifest_written"); !s.ok()) {
    Log(LogLevel::kError, absl::StrCat("training session ", id_, ": ", s.message()));
    return summary;
  }
  std::error_code ec;
  fs::remove(fs::path(dir_) / kLogFile, ec);
  samples_.clear();
  samples_.shrink_to_fit();
  return summary;
}

absl::Status Session::Rebase(int64_t version, std::shared_ptr<const Model> base) {
  absl::MutexLock lock(&mu_);
  DrainPendingLocked();
  RETURN_IF_ERROR(UsableLocked());
  if (config_.base_version == version) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::shared_ptr<const Base> b,
                   MakeBase(std::move(base), env_, base_->generation + 1));
  if (b->model->inputs()[0].shape != base_->model->inputs()[0].shape ||
      b->model->bn_layers().size() != base_->model->bn_layers().size()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "session ", id_, ": version ", version, " has a different input or BN layers than version ",
        config_.base_version, "; start a new session"));
  }
  // Everything that can fail runs before the manifest moves: the replay on the new base
  // first, so a sample it cannot take leaves the session on its old base.
  ASSIGN_OR_RETURN(std::vector<LayerAccumulator> live, ReplayLocked(*b));
  RETURN_IF_ERROR(FaultPoint(env_.fault_hook, "rebase.replayed"));
  SessionConfig next = config_;
  next.base_version = version;
  // The commit point: once renamed, a restart replays the log on `version`.
  RETURN_IF_ERROR(WriteFileAtomically(dir_ + "/" + kManifestFile, SerializeManifest(next)));
  config_ = next;
  base_ = std::move(b);
  live_ = std::move(live);
  base_version_.store(version, std::memory_order_release);
  ExportMetricsLocked();
  // Past the commit point a failure is logged, never answered: the rebase happened.
  if (absl::Status s = FaultPoint(env_.fault_hook, "rebase.manifest_written"); !s.ok()) {
    Log(LogLevel::kError, absl::StrCat("training session ", id_, ": ", s.message()));
  }
  return absl::OkStatus();
}

absl::Status Session::Abort(const std::string& tombstone) {
  absl::MutexLock lock(&mu_);
  DrainPendingLocked();
  if (aborted_) return UsableLocked();
  RETURN_IF_ERROR(FaultPoint(env_.fault_hook, "abort.begin"));
  // The commit point is the rename: after it the directory name is one recovery deletes,
  // before it the session is intact. Nothing writes into the directory afterwards:
  // every writer holds mu_ and checks aborted_ first.
  if (::rename(dir_.c_str(), tombstone.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("session ", id_, ": cannot rename its state ", dir_,
                                            " to ", tombstone, ": ", std::strerror(errno)));
  }
  aborted_ = true;
  log_.reset();
  samples_.clear();
  samples_.shrink_to_fit();
  // Past the commit point a failure is logged, never answered: the abort happened.
  absl::Status s = FaultPoint(env_.fault_hook, "abort.renamed");
  // Durable abort: without the fsync a power loss could bring the directory name back.
  if (s.ok()) s = FsyncDirectory(fs::path(dir_).parent_path().string());
  if (!s.ok()) {
    Log(LogLevel::kError, absl::StrCat("training session ", id_, " aborted: ", s.message()));
  }
  return absl::OkStatus();
}

SessionConfig Session::config() const {
  absl::MutexLock lock(&mu_);
  return config_;
}

int64_t Session::requests_accepted() const {
  absl::MutexLock lock(&mu_);
  return requests_accepted_;
}

bool Session::open() const {
  absl::MutexLock lock(&mu_);
  return config_.state == "open";
}

}  // namespace normserve
