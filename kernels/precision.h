// The arithmetic a compiled model version runs in (CompileOptions::precision), and the
// CPU check that refuses a precision this machine has no instructions for: a load must
// fail naming the missing ISA rather than run oneDNN's reference kernels at a tenth of
// the speed.
#ifndef NORMSERVE_KERNELS_PRECISION_H_
#define NORMSERVE_KERNELS_PRECISION_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "dnnl.hpp"

namespace normserve {

// Requests and responses are float32 whatever the precision; it only changes what runs
// between the graph's inputs and outputs.
enum class Precision {
  // Everything in float32.
  kFp32,
  // Convolution and inner-product weights rounded to bfloat16 (after BatchNorm folding in
  // float64); activations bfloat16 between oneDNN primitives; biases, normalization
  // parameters and custom kernels float32.
  kBf16,
  // Convolutions of a QDQ model (qdq_import.h) as oneDNN int8 convolutions: u8/s8
  // activations, s8 weights, per-channel output scales; everything else float32. A float
  // model has no scales and is refused (calibrate it with QuantizeInt8 first).
  kInt8,
};

// "fp32", "bf16", "int8": the config.json spelling.
absl::string_view PrecisionName(Precision p);
// The inverse of PrecisionName; an unknown name is INVALID_ARGUMENT naming `field`, the
// value (truncated) and the allowed values.
absl::StatusOr<Precision> ParsePrecision(absl::string_view name, absl::string_view field);

// oneDNN's name for an ISA ("avx512_core_bf16", ...).
std::string CpuIsaName(dnnl::cpu_isa isa);

// Whether a CPU whose best oneDNN ISA is `isa` (dnnl::get_effective_cpu_isa()) runs `p`
// natively. bf16 needs avx512_core_bf16 (AVX512-BF16 instructions) or better; the error
// names the precision, the ISA needed and the ISA found. int8 needs avx512_core_vnni.
absl::Status CheckPrecisionSupported(Precision p, dnnl::cpu_isa isa);

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_PRECISION_H_
