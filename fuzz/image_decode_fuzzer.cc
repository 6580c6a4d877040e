// libFuzzer target: image file bytes -> DecodeImage (libpng, libjpeg-turbo, the Netpbm
// reader) and, when it decodes, PreprocessImage with a resize and a crop, as normserve-cli
// runs on every file handed to predict or train accumulate.
#include <cstddef>
#include <cstdint>
#include <string>

#include "tools/image_decode.h"
#include "tools/image_preprocess.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<normserve::cli::Image> image = normserve::cli::DecodeImage(bytes, "fuzz");
  if (!image.ok()) return 0;
  // Bound the work per input: the decoders allow up to kMaxImagePixels.
  if (image->height * image->width > (int64_t{1} << 20)) return 0;
  normserve::v1::Preprocess p;
  p.set_resize_shorter_side(16);
  p.add_center_crop(8);
  p.add_center_crop(8);
  p.add_mean(0.5f);
  p.add_std(0.25f);
  for (int64_t channels : {1, 3}) {
    (void)normserve::cli::PreprocessImage(*image, p, channels, 8, 8, "fuzz");
    (void)normserve::cli::PreprocessImage(*image, normserve::v1::Preprocess(), channels, -1, -1,
                                          "fuzz");
  }
  return 0;
}
