// ONNX ModelProto -> Graph, through libonnx's protobuf classes and checker.
#ifndef NORMSERVE_KERNELS_ONNX_IMPORT_H_
#define NORMSERVE_KERNELS_ONNX_IMPORT_H_

#include <string_view>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "kernels/graph.h"

namespace normserve {

struct ImportedOnnx {
  Graph graph;
  int64_t opset = 0;
  // Initializers stored as uint8 (the graph keeps integers as int64): a QuantizeLinear's
  // zero point type says whether the quantized tensor is unsigned (qdq_import.h).
  absl::flat_hash_set<std::string> uint8_initializers;
};

// Parses and checks an ONNX file. Fails (INVALID_ARGUMENT) on a truncated or corrupt
// file, a checker error, an unsupported operator, data type or external data, naming the
// node and the reason. Constant nodes become initializers.
absl::StatusOr<ImportedOnnx> ImportOnnx(std::string_view bytes);

// Operators the engine can run (ai.onnx domain).
bool IsSupportedOp(const std::string& op);

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_ONNX_IMPORT_H_
