// ONNX ModelProto -> Graph, through libonnx's protobuf classes and checker.
#ifndef NORMSERVE_KERNELS_ONNX_IMPORT_H_
#define NORMSERVE_KERNELS_ONNX_IMPORT_H_

#include <string_view>

#include "absl/status/statusor.h"
#include "kernels/graph.h"

namespace normserve {

struct ImportedOnnx {
  Graph graph;
  int64_t opset = 0;
};

// Parses and checks an ONNX file. Fails (INVALID_ARGUMENT) on a truncated or corrupt
// file, a checker error, an unsupported operator, data type or external data, naming the
// node and the reason. Constant nodes become initializers.
absl::StatusOr<ImportedOnnx> ImportOnnx(std::string_view bytes);

// Operators the engine can run (ai.onnx domain).
bool IsSupportedOp(const std::string& op);

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_ONNX_IMPORT_H_
