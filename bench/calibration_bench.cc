// normserve_calibration_bench: wall time of the layer-wise recalibration a training
// Commit runs (CalibrateLayerwise), replaying every wave from the input against starting
// each wave from the kept cut, on K seeded random samples. Prints a Markdown table; the
// reference column is one folded batch-1 forward pass (what a serving request costs), so
// "forward passes a sample" says how far the commit is from its lower bound of about one.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "kernels/engine.h"
#include "kernels/layerwise_calibration.h"
#include "kernels/model.h"
#include "kernels/status_macros.h"
#include "kernels/tensor.h"

ABSL_FLAG(std::string, model, "", "ONNX file (e.g. build/bench_models/resnet18/model.onnx)");
ABSL_FLAG(int32_t, samples, 32, "K: batch-1 samples to recalibrate with");
ABSL_FLAG(int32_t, threads, 2, "intra-op threads");
ABSL_FLAG(int32_t, batch, 8, "samples per forward pass (CalibrationOptions::batch)");
ABSL_FLAG(int64_t, max_cached_mb, 512,
          "CalibrationOptions::max_cached_bytes of the cached run, in MiB");
ABSL_FLAG(bool, skip_replay, false, "run only the cached mode (the replay is the slow one)");

namespace normserve {
namespace bench {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

absl::StatusOr<double> ForwardSeconds(std::shared_ptr<const Model> model, const Tensor& sample,
                                      int threads) {
  CompileOptions co;
  co.intra_op_threads = threads;
  ASSIGN_OR_RETURN(auto compiled, CompiledModel::Compile(model, co));
  auto ctx = compiled->NewContext();
  std::vector<Tensor> out;
  std::vector<double> times;
  for (int i = 0; i < 25; ++i) {
    const auto t0 = Clock::now();
    RETURN_IF_ERROR(ctx->Run({TensorView{sample.data.data(), sample.shape}}, &out));
    if (i >= 5) times.push_back(Seconds(t0));
  }
  std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
  return times[times.size() / 2];
}

absl::Status Run() {
  const std::string path = absl::GetFlag(FLAGS_model);
  if (path.empty()) return absl::InvalidArgumentError("--model is required");
  const int k = absl::GetFlag(FLAGS_samples);
  if (k < 2) return absl::InvalidArgumentError("--samples must be at least 2");
  ASSIGN_OR_RETURN(auto model, Model::LoadFile(path));
  std::vector<int64_t> shape = model->inputs()[0].shape;
  shape[0] = 1;
  int64_t per = 1;
  for (int64_t d : shape) per *= d;
  std::mt19937 rng(2026);
  std::normal_distribution<float> normal;
  std::vector<Tensor> samples;
  for (int i = 0; i < k; ++i) {
    Tensor t{shape, std::vector<float>(per)};
    for (float& v : t.data) v = normal(rng);
    samples.push_back(std::move(t));
  }
  const int threads = absl::GetFlag(FLAGS_threads);
  ASSIGN_OR_RETURN(const double forward, ForwardSeconds(model, samples[0], threads));

  struct Row {
    std::string mode;
    double seconds;
    CalibrationResult result;
  };
  std::vector<Row> rows;
  for (bool cached : {false, true}) {
    if (!cached && absl::GetFlag(FLAGS_skip_replay)) continue;
    CalibrationOptions o;
    o.intra_op_threads = threads;
    o.batch = absl::GetFlag(FLAGS_batch);
    o.max_cached_bytes = cached ? absl::GetFlag(FLAGS_max_cached_mb) << 20 : 0;
    const auto t0 = Clock::now();
    ASSIGN_OR_RETURN(CalibrationResult r, CalibrateLayerwise(model, samples, o));
    rows.push_back({cached ? "kept cuts" : "replay from input", Seconds(t0), std::move(r)});
  }

  std::printf(
      "%s: %zu BN layers, %d waves, K=%d, %d threads; one folded batch-1 forward: %.2f ms\n\n",
      path.c_str(), rows[0].result.layers.size(), rows[0].result.waves, k, threads, forward * 1e3);
  std::printf(
      "| mode | commit s | s a sample | forward passes a sample | waves from cache | peak cut MiB "
      "|\n");
  std::printf("|---|---|---|---|---|---|\n");
  for (const Row& r : rows) {
    std::printf("| %s | %.2f | %.3f | %.1f | %d of %d | %.1f |\n", r.mode.c_str(), r.seconds,
                r.seconds / k, r.seconds / k / forward, r.result.waves_from_cache, r.result.waves,
                r.result.peak_cached_bytes / 1048576.0);
  }
  if (rows.size() == 2) {
    // The two modes must agree: report the worst per-channel difference.
    double worst = 0;
    const auto& a = rows[0].result.layers;
    const auto& b = rows[1].result.layers;
    for (size_t i = 0; i < a.size(); ++i) {
      for (size_t c = 0; c < a[i].committed.mean.size(); ++c) {
        const double sd = std::sqrt(a[i].committed.var[c]) + 1e-12;
        worst = std::max(worst, std::abs(a[i].committed.mean[c] - b[i].committed.mean[c]) / sd);
        worst =
            std::max(worst, std::abs(a[i].committed.var[c] - b[i].committed.var[c]) / (sd * sd));
      }
    }
    std::printf(
        "\nspeed-up %.1fx; worst difference between the modes: %.2e (relative to the channel's sd "
        "/ var)\n",
        rows[0].seconds / rows[1].seconds, worst);
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace bench
}  // namespace normserve

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const absl::Status s = normserve::bench::Run();
  if (!s.ok()) {
    std::fprintf(stderr, "normserve_calibration_bench: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}
