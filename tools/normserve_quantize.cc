// normserve-quantize: the offline twin of the training endpoint's int8 commit. Writes the
// QDQ ONNX file of a float BN model from sample inputs (.npy, any batch), with the same
// layer-wise MSE-optimal scales (kernels/int8_quantization.h); the file serves in int8 in
// normserve (a model without `precision` in config.json) and runs in ONNX Runtime.
// bench/run_bench.sh uses it for its int8 rows.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kernels/int8_quantization.h"
#include "kernels/model.h"
#include "kernels/npy_io.h"

ABSL_FLAG(std::string, model, "", "the float ONNX model (BatchNormalization nodes or folded)");
ABSL_FLAG(std::string, samples, "",
          "comma-separated .npy files of calibration inputs (the model input's shape, any "
          "batch)");
ABSL_FLAG(std::string, out, "", "the QDQ ONNX file to write");
ABSL_FLAG(bool, layerwise, true,
          "scales from the network with every upstream point quantized (false: one float "
          "pass)");
ABSL_FLAG(bool, quantize_input_convs, false, "also quantize convolutions that read a graph input");
ABSL_FLAG(int, threads, 0, "intra-op threads of the calibration passes (0: OpenMP default)");

namespace {

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "normserve-quantize: %s\n", std::string(s.ToString()).c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "normserve-quantize --model=float.onnx --samples=a.npy,b.npy --out=int8.onnx");
  absl::ParseCommandLine(argc, argv);
  const std::string model_path = absl::GetFlag(FLAGS_model);
  const std::string out = absl::GetFlag(FLAGS_out);
  if (model_path.empty() || out.empty() || absl::GetFlag(FLAGS_samples).empty()) {
    return Fail(absl::InvalidArgumentError("--model, --samples and --out are required"));
  }
  absl::StatusOr<std::shared_ptr<const normserve::Model>> model =
      normserve::Model::LoadFile(model_path);
  if (!model.ok()) return Fail(model.status());
  std::vector<normserve::Tensor> samples;
  for (absl::string_view path : absl::StrSplit(absl::GetFlag(FLAGS_samples), ',')) {
    absl::StatusOr<normserve::Tensor> t = normserve::ReadNpyFile(std::string(path));
    if (!t.ok()) return Fail(t.status());
    samples.push_back(*std::move(t));
  }
  normserve::Int8QuantizationOptions options;
  options.layerwise = absl::GetFlag(FLAGS_layerwise);
  options.quantize_input_convs = absl::GetFlag(FLAGS_quantize_input_convs);
  options.intra_op_threads = absl::GetFlag(FLAGS_threads);
  absl::StatusOr<normserve::Int8QuantizationResult> q =
      normserve::QuantizeInt8(*model, samples, options);
  if (!q.ok()) return Fail(q.status());
  std::ofstream file(out, std::ios::binary | std::ios::trunc);
  file << q->qdq_onnx;
  file.close();
  if (!file) return Fail(absl::InternalError(absl::StrCat("cannot write --out=", out)));
  std::printf("%s: %d layers with int8 weights and inputs, %zu activation scales in %d waves\n",
              out.c_str(), q->quantized_layers, q->activations.size(), q->waves);
  return 0;
}
