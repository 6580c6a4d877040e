// Post-training int8 quantization of a BN network into a QDQ ONNX file: the format ONNX
// Runtime's quantization tool writes, so an int8 model version is portable as it is.
//
// What the file holds: BatchNorm folded into the preceding Conv/Gemm in float64; each
// Conv/Gemm weight as DequantizeLinear(int8 initializer, per-output-channel scales, axis),
// symmetric (zero point 0, levels -127..127); its bias as DequantizeLinear(int32, scale
// s_x * s_w[o]); each Conv/Gemm input activation as DequantizeLinear(QuantizeLinear(x))
// with one scale per tensor and zero point 0: uint8 where the calibration never saw a
// negative value (after ReLU), int8 otherwise; likewise each Conv/Gemm output (after its
// Relu/Clip) that is not a graph output. Every consumer of such a tensor
// reads the dequantized value, as an int8 engine storing the tensor in 8 bits would.
//
// Activation scales: MSE-optimal clipping of a histogram of |x| over all calibration
// samples (see MseOptimalClip), computed layer by layer: a tensor's scale comes from the
// values it takes when every quantization point upstream of it (activations and weights)
// is already quantized, the reasoning of the layer-wise BN commit.
#ifndef NORMSERVE_KERNELS_INT8_QUANTIZATION_H_
#define NORMSERVE_KERNELS_INT8_QUANTIZATION_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/model.h"
#include "kernels/tensor.h"

namespace normserve {

struct Int8QuantizationOptions {
  // true: each tensor's scale from the activations of the network with every upstream
  // point quantized; false: all scales from one pass of the float32 network.
  bool layerwise = true;
  // false: a convolution that reads a graph input keeps float32 input and weights. The
  // input's resolution matters (a low-contrast image has steps of 0.0012, uint8's step
  // over [0, 1] is 0.0039) and 1-3 input channels make that layer cheap anyway.
  bool quantize_input_convs = false;
  // true: every Conv/Gemm output (behind its Relu/Clip if that is all that reads it) is
  // quantized too, whatever reads it next (a residual Add, a MaxPool): int8 storage
  // between layers, and ONNX Runtime's int8 kernels need a QuantizeLinear there.
  bool quantize_layer_outputs = true;
  int histogram_bins = 2048;
  int64_t batch = 8;  // samples per forward pass of a calibration segment
  // Largest set of activations held at once (every sample's values of the points a later
  // pass still reads, plus the pass being computed; float32). Beyond it the calibration
  // fails (RESOURCE_EXHAUSTED) rather than grow with the number of samples.
  int64_t max_kept_bytes = int64_t{2} << 30;
  int intra_op_threads = 0;
};

// One quantized activation tensor.
struct ActivationQuantization {
  std::string tensor;
  bool is_unsigned = false;  // uint8 [0, 255 s] else int8 [-127 s, 127 s]
  float scale = 0;           // clip / levels
  double max_abs = 0;        // largest |x| seen in calibration
  int wave = 0;              // calibration pass it was computed in
};

struct Int8QuantizationResult {
  std::string qdq_onnx;                             // the int8 model version's file
  std::shared_ptr<const Model> folded;              // the BN-folded float32 model it derives from
  std::vector<ActivationQuantization> activations;  // in graph order
  int quantized_layers = 0;                         // Conv/Gemm nodes with int8 weights and input
  int waves = 0;
};

// `model`: a float32 ONNX model (opset 13 or newer: per-channel DequantizeLinear needs
// it). `samples`: calibration inputs of the model input's shape, any batch.
absl::StatusOr<Int8QuantizationResult> QuantizeInt8(std::shared_ptr<const Model> model,
                                                    absl::Span<const Tensor> samples,
                                                    const Int8QuantizationOptions& options = {});
// The same with the samples by pointer: a caller calibrating on some of its tensors (a
// training commit holding out every fifth) does not copy the others.
absl::StatusOr<Int8QuantizationResult> QuantizeInt8(std::shared_ptr<const Model> model,
                                                    absl::Span<const Tensor* const> samples,
                                                    const Int8QuantizationOptions& options = {});

// The clipping threshold T minimizing the expected squared error of quantizing values
// whose magnitudes have histogram `counts` (bin i covers [i w, (i+1) w)) to `levels`
// steps over [0, T]: values beyond T cost (|x| - T)^2, values within it the uniform
// rounding noise (T / levels)^2 / 12 (Widrow's model, accurate once a step is small
// against the distribution). Candidates are the bin edges; every bin counts at its centre.
double MseOptimalClip(absl::Span<const int64_t> counts, double bin_width, int levels);

// The BN-folded float32 model as ONNX bytes (the reference int8 is measured against):
// each BatchNormalization reading only a Conv or Gemm (alpha = beta = 1, constant
// weights) is folded into it in float64; others stay.
absl::StatusOr<std::string> FoldBatchNormsOnnx(const Model& model);

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_INT8_QUANTIZATION_H_
