// Runs one exported zoo variant (tests/zoo/export_zoo.py's layout) through the engine and
// prints one tab-separated line per comparison for tests/zoo/zoo_test.py to judge:
//   <label> <status> <max rel err> <compile ms> <first run ms> <message, <= 200 chars>
// status: ran | shape_mismatch | export_refused | load_refused | compile_refused | run_refused.
// max rel err = max|got - ref| / max(1e-6, max|ref|), over the whole output; NaN counts
// as infinite. The runner decides nothing: the tolerance and expectations live in the test.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "kernels/engine.h"
#include "kernels/model.h"
#include "kernels/npy_io.h"

namespace normserve {
namespace {

constexpr size_t kMaxMessage = 200;

double MillisSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

// One line, no tabs, at most kMaxMessage characters: messages go into a TSV and a table.
std::string OneLine(std::string text) {
  std::replace_if(
      text.begin(), text.end(), [](char c) { return c == '\n' || c == '\t' || c == '|'; }, ' ');
  return text.size() > kMaxMessage ? text.substr(0, kMaxMessage) : text;
}

void PrintLine(const std::string& label, const char* status, double err, double compile_ms,
               double run_ms, const std::string& message) {
  std::printf("%s\t%s\t%.3g\t%.0f\t%.0f\t%s\n", label.c_str(), status, err, compile_ms, run_ms,
              OneLine(message).c_str());
  std::fflush(stdout);
}

double MaxRelativeError(const Tensor& got, const Tensor& want) {
  double max_ref = 0, max_err = 0;
  for (size_t i = 0; i < want.data.size(); ++i) {
    max_ref = std::max(max_ref, std::fabs(static_cast<double>(want.data[i])));
    const double d = std::fabs(static_cast<double>(got.data[i]) - want.data[i]);
    if (!(d <= max_err)) max_err = std::isnan(d) ? std::numeric_limits<double>::infinity() : d;
  }
  return max_err / std::max(1e-6, max_ref);
}

struct Case {
  std::string label, input, output;
};

int Main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s VARIANT_DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  std::vector<Case> cases;
  {
    std::ifstream in(dir + "/cases.txt");
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      Case c;
      if (fields >> c.label >> c.input >> c.output) cases.push_back(c);
    }
  }
  if (cases.empty()) {
    std::fprintf(stderr, "%s/cases.txt: missing or empty\n", dir.c_str());
    return 2;
  }
  const auto refuse_all = [&](const char* status, double compile_ms, const std::string& message) {
    for (const Case& c : cases) PrintLine(c.label, status, NAN, compile_ms, 0, message);
    return 0;
  };
  {
    std::ifstream export_error(dir + "/export_error.txt");
    if (export_error) {
      std::string message((std::istreambuf_iterator<char>(export_error)),
                          std::istreambuf_iterator<char>());
      return refuse_all("export_refused", 0, message);
    }
  }

  auto start = std::chrono::steady_clock::now();
  auto model = Model::LoadFile(dir + "/model.onnx");
  if (!model.ok()) return refuse_all("load_refused", MillisSince(start), model.status().ToString());
  CompileOptions options;
  options.intra_op_threads = 2;
  // Direct convolutions: kAuto times both algorithms per layer at compile, which makes the
  // result depend on the machine's load and costs seconds a model; Winograd's parity is
  // parity_test's job, the zoo's is operator coverage.
  options.conv_algorithm = ConvAlgorithm::kDirect;
  auto compiled = CompiledModel::Compile(*model, options);
  const double compile_ms = MillisSince(start);
  if (!compiled.ok())
    return refuse_all("compile_refused", compile_ms, compiled.status().ToString());
  auto ctx = (*compiled)->NewContext();

  for (const Case& c : cases) {
    auto input = ReadNpyFile(dir + "/" + c.input);
    auto want = ReadNpyFile(dir + "/" + c.output);
    if (!input.ok() || !want.ok()) {
      std::fprintf(stderr, "%s: reference files unreadable\n", c.label.c_str());
      return 2;
    }
    // The batch comes from inputs[0].shape[0] (today's API: one plan per batch size).
    std::vector<Tensor> out;
    TensorView view{input->data.data(), input->shape};
    start = std::chrono::steady_clock::now();
    absl::Status run = ctx->Run({view}, &out);
    const double run_ms = MillisSince(start);
    if (!run.ok()) {
      PrintLine(c.label, "run_refused", NAN, compile_ms, run_ms, run.ToString());
    } else if (out.size() != 1 || out[0].shape != want->shape) {
      PrintLine(c.label, "shape_mismatch", NAN, compile_ms, run_ms,
                "output shape " +
                    (out.empty() ? std::string("(none)") : ShapeToString(out[0].shape)) +
                    ", PyTorch " + ShapeToString(want->shape));
    } else {
      PrintLine(c.label, "ran", MaxRelativeError(out[0], *want), compile_ms, run_ms, "");
    }
  }
  return 0;
}

}  // namespace
}  // namespace normserve

int main(int argc, char** argv) { return normserve::Main(argc, argv); }
