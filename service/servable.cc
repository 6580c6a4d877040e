// Building a servable: the only place the service calls the engine's load and compile.
#include "service/servable.h"

#include <algorithm>
#include <atomic>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/precision.h"
#include "kernels/status_macros.h"

namespace normserve {
namespace {

uint64_t NextServableId() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

absl::Status Annotate(const absl::Status& s, const std::string& path) {
  return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
}

}  // namespace

absl::StatusOr<std::vector<StreamVariant>> BuildStreamVariants(
    const std::shared_ptr<const Model>& model, std::shared_ptr<const CompiledModel> top,
    const CompileOptions& compile, bool halve, const ServableOptions& options) {
  // Every halving of the top thread count down to one, compiled now so a switch of
  // stream shape never compiles on the request path.
  std::vector<int> threads = {compile.intra_op_threads};
  if (halve) {
    for (int t = compile.intra_op_threads / 2; t >= 1; t /= 2) threads.push_back(t);
  }
  std::vector<StreamVariant> variants;
  for (int t : threads) {
    StreamVariant v;
    v.threads = t;
    if (variants.empty()) {
      v.compiled = top;
    } else {
      CompileOptions other = compile;
      other.intra_op_threads = t;
      ASSIGN_OR_RETURN(v.compiled, CompiledModel::Compile(model, other));
    }
    // As many contexts as streams of this size can run at once.
    const int budget = std::max(options.cores, 1);
    const int streams = std::max(1, std::min(options.max_streams, budget / std::max(t, 1)));
    v.contexts = std::make_shared<ContextPool>(v.compiled, streams, /*warm=*/options.cores > 0);
    variants.push_back(std::move(v));
  }
  return variants;
}

absl::StatusOr<std::shared_ptr<const Servable>> LoadServable(
    const std::string& name, int64_t version, const std::string& path, const FileStamp& stamp,
    const normserve::v1::ModelConfig& config, const ServableOptions& options) {
  absl::StatusOr<std::shared_ptr<const Model>> model = Model::LoadFile(path);
  if (!model.ok()) return Annotate(model.status(), path);

  PerformanceHint hint = options.performance_hint;
  if (!config.performance_hint().empty()) {
    absl::StatusOr<PerformanceHint> parsed =
        ParsePerformanceHint(config.performance_hint(), "performance_hint");
    if (!parsed.ok()) return Annotate(parsed.status(), path);
    hint = *parsed;
  }
  // An explicit thread count fixes the shape; otherwise the hint cuts it from the budget.
  const int fixed_threads =
      config.intra_op_threads() > 0 ? config.intra_op_threads() : options.intra_op_threads;
  int top = fixed_threads;
  if (fixed_threads == 0 && options.cores > 0) {
    top = hint == PerformanceHint::kThroughput ? 1 : options.cores;
  }

  CompileOptions compile;
  compile.intra_op_threads = top;
  const int64_t max_batch =
      config.max_batch_size() > 0 ? config.max_batch_size() : options.max_batch;
  if (max_batch > 0) compile.max_batch = max_batch;
  if (config.precompile_batch_sizes_size() > 0) {
    compile.precompile_batch_sizes.assign(config.precompile_batch_sizes().begin(),
                                          config.precompile_batch_sizes().end());
  }
  const int64_t batch_limit =
      config.has_dynamic_batching() ? config.dynamic_batching().max_batch_size() : 1;
  if (batch_limit > 1) {
    for (const ValueSpec& in : (*model)->inputs()) {
      if (in.shape.empty() || in.shape[0] >= 0) {
        return Annotate(absl::InvalidArgumentError(absl::StrCat(
                            "dynamic_batching needs a dynamic batch dim; input \"", in.name,
                            "\" has ", in.shape.empty() ? "no dims" : "a fixed batch")),
                        path);
      }
    }
    if (batch_limit > compile.max_batch) {
      return Annotate(absl::InvalidArgumentError(
                          absl::StrCat("dynamic_batching.max_batch_size ", batch_limit,
                                       " is above the model's max_batch_size ", compile.max_batch)),
                      path);
    }
    // Joined runs of every size split into these without a compile on the request path.
    if (config.precompile_batch_sizes_size() == 0) {
      for (int64_t b = 2; b <= batch_limit; b *= 2) compile.precompile_batch_sizes.push_back(b);
    }
  }
  for (const auto& shape : config.precompile_shapes()) {
    compile.precompile_shapes.emplace_back(shape.dims().begin(), shape.dims().end());
  }
  const int64_t cache_mb =
      config.plan_cache_mb() > 0 ? config.plan_cache_mb() : options.plan_cache_mb;
  if (cache_mb > 0) compile.plan_cache_bytes = static_cast<size_t>(cache_mb) << 20;
  const int64_t max_dim =
      config.max_dynamic_dim() > 0 ? config.max_dynamic_dim() : options.max_dynamic_dim;
  if (max_dim > 0) compile.max_dynamic_dim = max_dim;
  compile.compile_unlisted_batch_sizes = config.compile_unlisted_batch_sizes();
  if (!config.precision().empty()) {
    // Checked by ParseModelConfig already; a config built in code is checked here.
    absl::StatusOr<Precision> precision = ParsePrecision(config.precision(), "precision");
    if (!precision.ok()) return Annotate(precision.status(), path);
    compile.precision = *precision;
    if (compile.precision == Precision::kInt8 && (*model)->int8_convs() == 0 &&
        CheckPrecisionSupported(Precision::kInt8, dnnl::get_effective_cpu_isa()).ok()) {
      return Annotate(
          absl::FailedPreconditionError(
              "config.json sets precision int8 but this version is a float model without "
              "quantization scales: calibrate it first (a training session's Commit with "
              "precision \"int8\", e.g. `normserve-cli train commit --precision int8`, "
              "publishes a QDQ version computed from its kept samples), serve a QDQ file "
              "(QuantizeLinear/DequantizeLinear, as ONNX Runtime's quantization tool writes), "
              "or remove precision from config.json"),
          path);
    }
  } else if ((*model)->int8_convs() > 0) {
    // A QDQ file says how it wants to run: its scales were calibrated for int8.
    compile.precision = Precision::kInt8;
    if (absl::Status isa = CheckPrecisionSupported(Precision::kInt8, dnnl::get_effective_cpu_isa());
        !isa.ok()) {
      return Annotate(absl::Status(isa.code(), absl::StrCat(isa.message(),
                                                            "; this version is a QDQ (int8) file: "
                                                            "set precision \"fp32\" in "
                                                            "config.json to serve it in float32")),
                      path);
    }
  }
  absl::StatusOr<std::shared_ptr<const CompiledModel>> compiled =
      CompiledModel::Compile(*model, compile);
  if (!compiled.ok()) return Annotate(compiled.status(), path);
  if (config.intra_op_threads() == 0 && compile.intra_op_threads != 1 &&
      (*compiled)->FlopsPerSample() < options.single_thread_below_flops) {
    // Known only once compiled; recompiling a model this small is cheap.
    compile.intra_op_threads = 1;
    compiled = CompiledModel::Compile(*model, compile);
    if (!compiled.ok()) return Annotate(compiled.status(), path);
  }

  absl::StatusOr<std::vector<StreamVariant>> variants = BuildStreamVariants(
      *model, *compiled, compile,
      /*halve=*/fixed_threads == 0 && options.cores > 0 && hint == PerformanceHint::kAuto, options);
  if (!variants.ok()) return Annotate(variants.status(), path);

  auto servable = std::make_shared<Servable>();
  servable->name = name;
  servable->version = version;
  servable->path = path;
  servable->stamp = stamp;
  servable->config = config;
  servable->compiled = *std::move(compiled);
  servable->performance_hint = hint;
  servable->variants = *std::move(variants);
  servable->batch_limit = batch_limit;
  if (batch_limit > 1) {
    servable->batch_delay =
        absl::Microseconds(config.dynamic_batching().max_queue_delay_microseconds());
  }
  servable->validation.allow_non_finite =
      config.has_allow_non_finite() ? config.allow_non_finite() : options.allow_non_finite;
  servable->validation.max_batch = servable->compiled->options().max_batch;
  servable->validation.max_dynamic_dim = servable->compiled->options().max_dynamic_dim;
  servable->id = NextServableId();
  servable->loaded_at = absl::Now();
  return std::shared_ptr<const Servable>(std::move(servable));
}

}  // namespace normserve
