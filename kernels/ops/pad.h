// What a Pad node asks for, read from either of its ONNX forms (opset < 11: attributes
// pads/mode/value; opset 11+: pads, constant_value and (18+) axes as constant inputs).
// Shared by the Pad lowering and the pass that folds a zero Pad into a Conv or pool.
#ifndef NORMSERVE_KERNELS_OPS_PAD_H_
#define NORMSERVE_KERNELS_OPS_PAD_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/graph.h"
#include "kernels/shape_inference.h"

namespace normserve {

struct PadSpec {
  enum class Mode { kConstant, kReflect, kEdge };
  Mode mode = Mode::kConstant;
  float value = 0.f;           // constant mode only
  std::vector<int64_t> begin;  // per axis of the input, may be negative (a crop)
  std::vector<int64_t> end;
};

// The pads of `n` for an input of rank `rank`, each within +-kMaxWindowGeometry; errors
// name the node and the offending pads, mode or value.
absl::StatusOr<PadSpec> ReadPadSpec(const Node& n, const ShapeContext& ctx, size_t rank);

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_OPS_PAD_H_
