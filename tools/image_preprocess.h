// A decoded image to a model input tensor [1, C, H, W] with the model's declared
// preprocessing (proto/normserve/v1/preprocess.proto: torchvision's Resize, CenterCrop,
// ToTensor, Normalize conventions), identical for predict and train accumulate.
#ifndef NORMSERVE_TOOLS_IMAGE_PREPROCESS_H_
#define NORMSERVE_TOOLS_IMAGE_PREPROCESS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/tensor.h"
#include "normserve/v1/preprocess.pb.h"
#include "service/preprocess_spec.h"
#include "tools/image_decode.h"

namespace normserve::cli {

// Resize with PIL's bilinear filter (a triangle of support max(1, in/out) input pixels,
// weights normalized per output pixel: antialiasing when shrinking), separable, in float:
// horizontal pass then vertical, as ImagingResample. Image is interleaved HWC.
Image ResizeBilinear(const Image& in, int64_t out_height, int64_t out_width);

// The whole pipeline. `height`/`width` are the model input's (<= 0: dynamic, any size);
// an image that does not end at that size is INVALID_ARGUMENT naming `name`, the size it
// has after preprocessing and the expected one.
absl::StatusOr<Tensor> PreprocessImage(const Image& image, const ::normserve::v1::Preprocess& p,
                                       int64_t channels, int64_t height, int64_t width,
                                       absl::string_view name);

}  // namespace normserve::cli

#endif  // NORMSERVE_TOOLS_IMAGE_PREPROCESS_H_
