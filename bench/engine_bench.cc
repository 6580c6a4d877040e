// normserve_engine_bench: batch-1 latency of the engine in-process on one ONNX file (or,
// with --conv_peak, the machine's oneDNN convolution peak), printed as one JSON line that
// bench/format_table.py joins with the ONNX Runtime and PyTorch runners' lines.
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/conv_peak.h"
#include "bench/engine_runner.h"
#include "bench/latency_stats.h"
#include "kernels/engine.h"
#include "kernels/model.h"
#include "kernels/status_macros.h"
#include "kernels/tensor.h"

ABSL_FLAG(std::string, model, "",
          "ONNX file to benchmark (e.g. build/bench_models/resnet18/model.onnx)");
ABSL_FLAG(std::string, name, "", "model name in the output; default: the file's directory name");
ABSL_FLAG(int32_t, threads, 2, "intra-op threads (CompileOptions::intra_op_threads)");
ABSL_FLAG(double, seconds, 10.0, "timed budget in seconds, after warmup");
ABSL_FLAG(int32_t, warmup, 10, "untimed runs before timing");
ABSL_FLAG(int32_t, min_iters, 20, "timed runs at least, even past --seconds");
ABSL_FLAG(int32_t, max_iters, 100000, "timed runs at most, even within --seconds");
ABSL_FLAG(bool, describe_plan, false, "print the compiled batch-1 plan to stderr");
ABSL_FLAG(bool, observed, false,
          "time the training endpoint's observed pass instead (every BN layer's input "
          "moments recorded, stopped after the last one): what one Accumulate computes");
ABSL_FLAG(bool, observed_winograd, true,
          "with --observed: Winograd where faster, as the live pass does (false: direct "
          "convolutions only, as the layer-wise commit replay)");
ABSL_FLAG(bool, conv_peak, false,
          "instead of a model, measure oneDNN's throughput on one 3x3 convolution "
          "(N=1, C=K=256, 56x56, pad 1, format_tag::any)");
ABSL_FLAG(double, peak_seconds, 3.0, "timed budget of --conv_peak");
ABSL_FLAG(std::string, precision, "fp32",
          "fp32, bf16 or int8 (a QDQ file): the plan's precision (config.json \"precision\"); "
          "with --conv_peak (fp32, bf16), "
          "the convolution's data type");

namespace normserve {
namespace bench {
namespace {

using Clock = std::chrono::steady_clock;

struct EngineBenchOptions {
  std::string model_path;
  std::string name;
  int threads = 2;
  double seconds = 10;
  int warmup = 10;
  int min_iters = 20;
  int max_iters = 100000;
  bool describe_plan = false;
  Precision precision = Precision::kFp32;
  bool observed = false;
  bool observed_winograd = false;
};

struct EngineBenchResult {
  LatencyStats latency;
  double gflop_per_run = 0;
};

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += absl::StrFormat("\\u%04x", static_cast<int>(c));
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

absl::StatusOr<EngineBenchResult> RunEngineBench(const EngineBenchOptions& o) {
  ASSIGN_OR_RETURN(std::unique_ptr<PreparedEngine> engine,
                   PrepareEngine(o.model_path, o.threads, 1234, o.precision));
  std::shared_ptr<const CompiledModel> compiled = engine->compiled;
  BnObservations observations;
  if (o.observed) {
    // What a training Accumulate runs: every BN layer's input observed (BatchNorm kept
    // unfolded), stopped after the last one.
    CompileOptions observed = LiveStatisticsOptions(*engine->model, o.threads);
    observed.observed_winograd = o.observed_winograd;
    if (observed.observed_bn_layers.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(o.name, ": no BN layer to observe"));
    }
    ASSIGN_OR_RETURN(compiled, CompiledModel::Compile(engine->model, observed));
  }
  BnObservations* observe = o.observed ? &observations : nullptr;
  if (o.describe_plan) std::fprintf(stderr, "%s\n", compiled->DescribePlan().c_str());
  const std::vector<TensorView>& inputs = engine->inputs;

  std::unique_ptr<ExecutionContext> context = compiled->NewContext();
  std::vector<Tensor> outputs;
  for (int i = 0; i < o.warmup; ++i) RETURN_IF_ERROR(context->Run(inputs, &outputs, observe));

  std::vector<double> times_ms;
  const auto start = Clock::now();
  const auto budget = std::chrono::duration<double>(o.seconds);
  while (static_cast<int>(times_ms.size()) < o.max_iters) {
    const auto t0 = Clock::now();
    RETURN_IF_ERROR(context->Run(inputs, &outputs, observe));
    const auto t1 = Clock::now();
    times_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    if (static_cast<int>(times_ms.size()) >= o.min_iters && t1 - start >= budget) break;
  }
  for (const Tensor& out : outputs) {
    for (float v : out.data) {
      if (!std::isfinite(v)) {
        return absl::InternalError(absl::StrCat(o.name, ": output has a non-finite value"));
      }
    }
  }

  EngineBenchResult r;
  r.latency = Summarize(std::move(times_ms));
  r.gflop_per_run = compiled->FlopsPerSample() / 1e9;
  return r;
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "normserve_engine_bench: %s\n", status.ToString().c_str());
  return 1;
}

int Main() {
  absl::StatusOr<Precision> precision =
      ParsePrecision(absl::GetFlag(FLAGS_precision), "--precision");
  if (!precision.ok()) return Fail(precision.status());
  if (absl::GetFlag(FLAGS_conv_peak)) {
    ConvPeakOptions peak;
    peak.bf16 = *precision == Precision::kBf16;
    peak.threads = absl::GetFlag(FLAGS_threads);
    peak.seconds = absl::GetFlag(FLAGS_peak_seconds);
    absl::StatusOr<ConvPeakResult> r = MeasureConvPeak(peak);
    if (!r.ok()) return Fail(r.status());
    std::printf(
        "{\"runner\":\"conv_peak\",\"gflops\":%.2f,\"gflops_best\":%.2f,\"gflop_per_run\":%.4f,"
        "\"median_ms\":%.4f,\"min_ms\":%.4f,\"iters\":%lld,\"threads\":%d,"
        "\"shape\":\"N=%lld C=%lld K=%lld %lldx%lld 3x3 pad 1\",\"implementation\":%s,"
        "\"precision\":\"%s\"}\n",
        r->gflops, r->gflops_best, r->gflop_per_run, r->median_ms, r->min_ms,
        static_cast<long long>(r->iters), peak.threads, static_cast<long long>(peak.batch),
        static_cast<long long>(peak.channels), static_cast<long long>(peak.out_channels),
        static_cast<long long>(peak.height), static_cast<long long>(peak.width),
        JsonString(r->implementation).c_str(), std::string(PrecisionName(*precision)).c_str());
    return 0;
  }

  EngineBenchOptions o;
  o.model_path = absl::GetFlag(FLAGS_model);
  if (o.model_path.empty()) return Fail(absl::InvalidArgumentError("--model is required"));
  o.name = absl::GetFlag(FLAGS_name);
  if (o.name.empty()) {
    o.name = std::filesystem::absolute(o.model_path).parent_path().filename().string();
  }
  o.threads = absl::GetFlag(FLAGS_threads);
  o.seconds = absl::GetFlag(FLAGS_seconds);
  o.warmup = absl::GetFlag(FLAGS_warmup);
  o.min_iters = std::max(1, absl::GetFlag(FLAGS_min_iters));
  o.max_iters = std::max(o.min_iters, absl::GetFlag(FLAGS_max_iters));
  o.describe_plan = absl::GetFlag(FLAGS_describe_plan);
  o.precision = *precision;
  o.observed = absl::GetFlag(FLAGS_observed);
  o.observed_winograd = absl::GetFlag(FLAGS_observed_winograd);

  absl::StatusOr<EngineBenchResult> r = RunEngineBench(o);
  if (!r.ok()) return Fail(r.status());
  const LatencyStats& l = r->latency;
  std::printf(
      "{\"runner\":\"normserve\",\"model\":%s,\"median_ms\":%.6f,\"p90_ms\":%.6f,"
      "\"mean_ms\":%.6f,\"min_ms\":%.6f,\"iters\":%lld,\"threads\":%d,"
      "\"gflop_per_run\":%.6f,\"gflops_achieved\":%.2f,\"precision\":\"%s\"%s}\n",
      JsonString(o.name).c_str(), l.median_ms, l.p90_ms, l.mean_ms, l.min_ms,
      static_cast<long long>(l.iters), o.threads, r->gflop_per_run,
      l.median_ms > 0 ? r->gflop_per_run / (l.median_ms / 1e3) : 0.0,
      std::string(PrecisionName(o.precision)).c_str(), o.observed ? ",\"observed\":true" : "");
  return 0;
}

}  // namespace
}  // namespace bench
}  // namespace normserve

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return normserve::bench::Main();
}
