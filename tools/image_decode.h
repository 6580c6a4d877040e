// Image files to pixels: PNG (libpng), JPEG (libjpeg-turbo) and binary Netpbm (PGM/PPM),
// decoded the way PIL opens them, so that the CLI's preprocessing can be checked against
// torchvision on PIL images (tests/tools/image_preprocess_oracle_test.py).
#ifndef NORMSERVE_TOOLS_IMAGE_DECODE_H_
#define NORMSERVE_TOOLS_IMAGE_DECODE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace normserve::cli {

// Interleaved (height, width, channels) pixels on the 0..255 scale: exact 8-bit values for
// PNG/JPEG (16-bit PNG is reduced to its high byte, as libpng's strip_16 and PIL do), and
// value * 255 / maxval for Netpbm. channels is 1 (grey) or 3 (RGB); alpha is dropped and a
// palette expanded.
struct Image {
  int64_t height = 0;
  int64_t width = 0;
  int64_t channels = 0;
  std::vector<float> pixels;
};

// Larger images are refused before any allocation (8192 x 8192).
constexpr int64_t kMaxImagePixels = int64_t{1} << 26;

// True for the extensions DecodeImage reads (.png, .jpg, .jpeg, .pgm, .ppm; any case).
bool IsImagePath(absl::string_view path);
// Decodes `bytes` by its magic number (not the extension); `name` names the file in errors.
absl::StatusOr<Image> DecodeImage(absl::string_view bytes, absl::string_view name);

}  // namespace normserve::cli

#endif  // NORMSERVE_TOOLS_IMAGE_DECODE_H_
