// libFuzzer target: ONNX file bytes -> Model::LoadBytes -> CompiledModel::Compile, what a
// LoadModel/ReloadModel (and every server start) does with a file from the repository.
// Inputs above kMaxInputBytes are skipped: the seeds are the repository's small models,
// and a cap keeps each execution in milliseconds.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "kernels/engine.h"
#include "kernels/model.h"

namespace {
constexpr size_t kMaxInputBytes = 256 * 1024;  // also run_fuzzer.sh's -max_len
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > kMaxInputBytes) return 0;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto model = normserve::Model::LoadBytes(bytes);
  if (!model.ok()) return 0;
  normserve::CompileOptions options;
  options.intra_op_threads = 1;
  options.precompile_batch_sizes = {1};
  options.max_batch = 2;
  options.conv_algorithm = normserve::ConvAlgorithm::kDirect;  // no timing runs
  (void)normserve::CompiledModel::Compile(*std::move(model), options);
  return 0;
}
