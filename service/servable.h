// A servable: one loaded, compiled model version. Immutable once built and shared as
// std::shared_ptr<const Servable>, so a request keeps the version it started on even
// while a reload publishes a newer one (TF Serving's ServableHandle idea).
#ifndef NORMSERVE_SERVICE_SERVABLE_H_
#define NORMSERVE_SERVICE_SERVABLE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kernels/engine.h"
#include "kernels/model.h"
#include "normserve/v1/model_config.pb.h"
#include "service/context_pool.h"
#include "service/performance_hint.h"
#include "service/request_validation.h"

namespace normserve {

// Identity of a model file on disk: a changed stamp means the file must be loaded again.
struct FileStamp {
  int64_t size = 0;
  int64_t mtime_ns = 0;
  bool operator==(const FileStamp& o) const { return size == o.size && mtime_ns == o.mtime_ns; }
  bool operator!=(const FileStamp& o) const { return !(*this == o); }
};

// Server-wide defaults a model's config.json may override.
struct ServableOptions {
  // OpenMP threads per execution, fixed whatever the hint; 0: from `cores` and the hint
  // (without cores: the OpenMP default).
  int intra_op_threads = 0;
  bool allow_non_finite = false;
  // 0: the engine's default.
  int64_t max_batch = 0;
  // Plan cache budget per model version and the largest dynamic dim besides the batch;
  // 0: the engine's defaults. A model's config.json overrides both.
  int64_t plan_cache_mb = 0;
  int64_t max_dynamic_dim = 0;
  // Models under this many FLOPs per sample run on one intra-op thread unless their
  // config.json sets intra_op_threads: OpenMP fork/join costs more than a second core
  // saves on them (measured on 2 cores, 1 vs 2 threads: tiny_bn 2.6 vs 12.0 us,
  // gn_small 17 vs 48 us, fashion_bn_cnn 48 vs 81 us). 0: off.
  double single_thread_below_flops = 0;
  // The scheduler's thread budget, from which the stream variants are cut (latency: one of
  // `cores` threads; throughput: one of 1; auto: cores, cores/2, ..., 1) and whose
  // contexts are made and warmed at load. 0: one variant at intra_op_threads, contexts
  // made on first use (tests and tools without a scheduler budget).
  int cores = 0;
  // Most runs at once (the scheduler's workers): how many contexts a variant prepares.
  int max_streams = 1;
  // For models whose config.json sets no performance_hint.
  PerformanceHint performance_hint = PerformanceHint::kAuto;
};

// One way to run a servable: compiled for `threads` OpenMP threads a run (oneDNN fixes a
// primitive's thread count when it is created, so each count needs its own compile).
struct StreamVariant {
  int threads = 0;  // 0: the OpenMP default
  std::shared_ptr<const CompiledModel> compiled;
  std::shared_ptr<ContextPool> contexts;
};

struct Servable {
  std::string name;
  int64_t version = 0;
  std::string path;  // the model.onnx file
  FileStamp stamp;
  normserve::v1::ModelConfig config;
  std::shared_ptr<const CompiledModel> compiled;
  PerformanceHint performance_hint = PerformanceHint::kAuto;
  // Most threads first; variants[0].compiled == compiled. Never empty.
  std::vector<StreamVariant> variants;
  // Dynamic batching (config.json dynamic_batching): most samples the scheduler joins
  // into one run (1: off), and how long a run's first request waits for more.
  int64_t batch_limit = 1;
  absl::Duration batch_delay = absl::ZeroDuration();
  ValidationOptions validation;
  // Process-unique: keys the per-worker execution contexts of this servable.
  uint64_t id = 0;
  absl::Time loaded_at;

  const Model& model() const { return compiled->model(); }
  // "fp32" or "bf16": what the compiled plans run in.
  std::string precision() const {
    return std::string(PrecisionName(compiled->options().precision));
  }
};

// The stream variants of `model` as LoadServable makes them: `top` (compiled with
// `compile`) first, then, with `halve`, one compile per halving of its thread count down
// to one; each with a context pool sized (and, with options.cores, warmed) for the streams
// of its size that fit in options.cores. Training sessions build their observed passes
// with it too.
absl::StatusOr<std::vector<StreamVariant>> BuildStreamVariants(
    const std::shared_ptr<const Model>& model, std::shared_ptr<const CompiledModel> top,
    const CompileOptions& compile, bool halve, const ServableOptions& options);

// Reads, imports and compiles `path`. Errors name the file.
absl::StatusOr<std::shared_ptr<const Servable>> LoadServable(
    const std::string& name, int64_t version, const std::string& path, const FileStamp& stamp,
    const normserve::v1::ModelConfig& config, const ServableOptions& options);

}  // namespace normserve

#endif  // NORMSERVE_SERVICE_SERVABLE_H_
