// The engine's side of the benchmarks, shared by normserve_engine_bench (one context,
// latency) and normserve_loadgen (the in-process reference next to end-to-end figures):
// load + compile an ONNX file for batch 1, fixed random inputs, timed runs.
#ifndef NORMSERVE_BENCH_ENGINE_RUNNER_H_
#define NORMSERVE_BENCH_ENGINE_RUNNER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/engine.h"
#include "kernels/model.h"
#include "kernels/tensor.h"

namespace normserve {
namespace bench {

// A compiled model and one batch-1 input set. Not copyable: `inputs` point into
// `buffers`.
struct PreparedEngine {
  std::shared_ptr<const Model> model;
  std::shared_ptr<const CompiledModel> compiled;
  std::vector<std::string> input_names;
  std::vector<std::vector<float>> buffers;  // float32, row-major, one per model input
  std::vector<TensorView> inputs;
};

// Batch-1 shape of a graph input: the batch dim becomes 1, any other dynamic dim is an
// error (the benchmark has no way to choose it).
absl::StatusOr<std::vector<int64_t>> Batch1Shape(const ValueSpec& spec);

// Loads and compiles `model_path` with `intra_op_threads`, and fills uniform [-1, 1)
// inputs (no denormals; the same data for every run and every process using `seed`).
absl::StatusOr<std::unique_ptr<PreparedEngine>> PrepareEngine(
    const std::string& model_path, int intra_op_threads, uint32_t seed = 1234,
    Precision precision = Precision::kFp32);

// Closed-loop runs of the engine in-process: `streams` threads, each with its own
// ExecutionContext (what the server's workers do), running back to back. Runs during
// the first `warmup_seconds` are untimed.
struct InProcessOptions {
  int streams = 1;
  double seconds = 5;
  double warmup_seconds = 1;
};
struct InProcessResult {
  std::vector<double> latencies_ms;  // one per timed run, every stream
  int64_t completed = 0;             // runs that finished inside the timed window
  double window_seconds = 0;
};
absl::StatusOr<InProcessResult> RunInProcess(const PreparedEngine& engine,
                                             const InProcessOptions& options);

}  // namespace bench
}  // namespace normserve

#endif  // NORMSERVE_BENCH_ENGINE_RUNNER_H_
