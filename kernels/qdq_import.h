// Import of a QDQ ONNX file (QuantizeLinear / DequantizeLinear around convolutions, as
// QuantizeInt8 and ONNX Runtime's quantization tool write) into the float graph the
// planner knows, with the int8 facts kept as Conv attributes for an int8 plan:
//   DequantizeLinear(constant q, s, zp, axis)  -> a float constant (q - zp) * s; its scales
//       go to the reading Conv as `int8_weight_scales` (one per output channel);
//   DequantizeLinear(QuantizeLinear(x, s, 0))  -> x; a Conv reading it gets
//       `int8_src_scale` = s and `int8_src_unsigned` (uint8 or int8 zero point type).
// An int8 plan runs such a Conv as a oneDNN int8 convolution (u8/s8 source quantized by a
// scaled reorder, s8 weights, per-channel output scales s_x * s_w[o]); any other plan, or
// any other reader of x, runs float on the same weights.
#ifndef NORMSERVE_KERNELS_QDQ_IMPORT_H_
#define NORMSERVE_KERNELS_QDQ_IMPORT_H_

#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "kernels/graph.h"

namespace normserve {

// Rewrites `g` in place; returns the number of Conv nodes annotated for int8. A
// QuantizeLinear not followed by DequantizeLinear, a non-zero activation zero point or a
// runtime DequantizeLinear input that no QuantizeLinear produced fails naming the node.
absl::StatusOr<int> ImportQdq(Graph* g, const absl::flat_hash_set<std::string>& uint8_initializers);

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_QDQ_IMPORT_H_
