// Engine preparation and in-process closed-loop runs for the benchmarks.
#include "bench/engine_runner.h"

#include <atomic>
#include <chrono>
#include <random>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "kernels/status_macros.h"

namespace normserve {
namespace bench {

using Clock = std::chrono::steady_clock;

absl::StatusOr<std::vector<int64_t>> Batch1Shape(const ValueSpec& spec) {
  if (spec.type != ElementType::kFloat32) {
    return absl::InvalidArgumentError(absl::StrCat("input \"", spec.name, "\": type ",
                                                   ElementTypeName(spec.type),
                                                   ", the benchmark feeds float32 only"));
  }
  if (spec.shape.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("input \"", spec.name, "\": scalar input, expected a batch dim"));
  }
  std::vector<int64_t> shape = spec.shape;
  shape[0] = 1;
  for (size_t axis = 1; axis < shape.size(); ++axis) {
    if (shape[axis] < 0) {
      return absl::InvalidArgumentError(absl::StrCat("input \"", spec.name, "\": dim ", axis,
                                                     " is dynamic in ", ShapeToString(spec.shape)));
    }
  }
  return shape;
}

absl::StatusOr<std::unique_ptr<PreparedEngine>> PrepareEngine(const std::string& model_path,
                                                              int intra_op_threads, uint32_t seed,
                                                              Precision precision) {
  auto e = std::make_unique<PreparedEngine>();
  ASSIGN_OR_RETURN(e->model, Model::LoadFile(model_path));
  CompileOptions compile_options;
  compile_options.intra_op_threads = intra_op_threads;
  compile_options.precompile_batch_sizes = {1};
  compile_options.precision = precision;
  ASSIGN_OR_RETURN(e->compiled, CompiledModel::Compile(e->model, compile_options));

  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  e->buffers.reserve(e->model->inputs().size());  // `inputs` point into these
  for (const ValueSpec& spec : e->model->inputs()) {
    ASSIGN_OR_RETURN(std::vector<int64_t> shape, Batch1Shape(spec));
    ASSIGN_OR_RETURN(int64_t count, ShapeElementCount(shape));
    std::vector<float> data(count);
    for (float& v : data) v = dist(gen);
    e->buffers.push_back(std::move(data));
    e->inputs.push_back(TensorView{e->buffers.back().data(), shape});
    e->input_names.push_back(spec.name);
  }
  return e;
}

absl::StatusOr<InProcessResult> RunInProcess(const PreparedEngine& engine,
                                             const InProcessOptions& options) {
  const int streams = std::max(1, options.streams);
  const auto t_start = Clock::now();
  const auto t_timed = t_start + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(options.warmup_seconds));
  const auto t_end = t_timed + std::chrono::duration_cast<Clock::duration>(
                                   std::chrono::duration<double>(options.seconds));
  absl::Mutex mu;
  InProcessResult result;
  absl::Status first_error;
  std::vector<std::thread> threads;
  for (int s = 0; s < streams; ++s) {
    threads.emplace_back([&] {
      std::unique_ptr<ExecutionContext> context = engine.compiled->NewContext();
      std::vector<double> mine;
      int64_t completed = 0;
      absl::Status status;
      std::vector<Tensor> outputs;
      while (status.ok()) {
        const auto t0 = Clock::now();
        if (t0 >= t_end) break;
        status = context->Run(engine.inputs, &outputs);
        const auto t1 = Clock::now();
        if (t0 >= t_timed)
          mine.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
        if (t1 >= t_timed && t1 <= t_end) ++completed;
      }
      absl::MutexLock lock(&mu);
      result.latencies_ms.insert(result.latencies_ms.end(), mine.begin(), mine.end());
      result.completed += completed;
      if (!status.ok() && first_error.ok()) first_error = status;
    });
  }
  for (std::thread& t : threads) t.join();
  if (!first_error.ok()) return first_error;
  result.window_seconds = options.seconds;
  return result;
}

}  // namespace bench
}  // namespace normserve
