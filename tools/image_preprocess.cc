// Image preprocessing with torchvision's conventions on PIL images; the oracle test
// compares it with torchvision (tests/tools/image_preprocess_oracle_test.py).
#include "tools/image_preprocess.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace normserve::cli {
namespace {

// One output pixel's input window and normalized weights (PIL's precompute_coeffs).
struct Taps {
  int64_t first = 0;
  std::vector<double> weights;
};

std::vector<Taps> BilinearTaps(int64_t in_size, int64_t out_size) {
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  const double filter_scale = std::max(scale, 1.0);
  const double support = 1.0 * filter_scale;  // the triangle's support is 1 at scale 1
  std::vector<Taps> taps(out_size);
  for (int64_t x = 0; x < out_size; ++x) {
    const double center = (static_cast<double>(x) + 0.5) * scale;
    // PIL truncates center -/+ support + 0.5 toward zero (both are >= -0.5 here).
    const int64_t lo = std::max<int64_t>(static_cast<int64_t>(center - support + 0.5), 0);
    const int64_t hi = std::min<int64_t>(static_cast<int64_t>(center + support + 0.5), in_size);
    Taps& t = taps[x];
    t.first = lo;
    double total = 0;
    for (int64_t i = lo; i < hi; ++i) {
      const double d = std::abs((static_cast<double>(i) - center + 0.5) / filter_scale);
      const double w = d < 1.0 ? 1.0 - d : 0.0;
      t.weights.push_back(w);
      total += w;
    }
    if (total != 0) {
      for (double& w : t.weights) w /= total;
    }
  }
  return taps;
}

}  // namespace

Image ResizeBilinear(const Image& in, int64_t out_height, int64_t out_width) {
  const int64_t c = in.channels;
  const std::vector<Taps> tx = BilinearTaps(in.width, out_width);
  const std::vector<Taps> ty = BilinearTaps(in.height, out_height);
  // Horizontal pass: in.height x out_width.
  std::vector<double> mid(in.height * out_width * c);
  for (int64_t y = 0; y < in.height; ++y) {
    for (int64_t x = 0; x < out_width; ++x) {
      for (int64_t k = 0; k < c; ++k) {
        double v = 0;
        for (size_t i = 0; i < tx[x].weights.size(); ++i) {
          v += tx[x].weights[i] * in.pixels[(y * in.width + tx[x].first + i) * c + k];
        }
        mid[(y * out_width + x) * c + k] = v;
      }
    }
  }
  Image out{out_height, out_width, c, std::vector<float>(out_height * out_width * c)};
  for (int64_t y = 0; y < out_height; ++y) {
    for (int64_t x = 0; x < out_width; ++x) {
      for (int64_t k = 0; k < c; ++k) {
        double v = 0;
        for (size_t i = 0; i < ty[y].weights.size(); ++i) {
          v += ty[y].weights[i] * mid[((ty[y].first + i) * out_width + x) * c + k];
        }
        out.pixels[(y * out_width + x) * c + k] = static_cast<float>(v);
      }
    }
  }
  return out;
}

absl::StatusOr<Tensor> PreprocessImage(const Image& image, const v1::Preprocess& p,
                                       int64_t channels, int64_t height, int64_t width,
                                       absl::string_view name) {
  if (channels <= 0) channels = image.channels;
  if (channels != 1 && channels != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("the model input has ", channels, " channels; images give 1 or 3"));
  }
  if (absl::Status s = ValidatePreprocess(p, channels); !s.ok()) return s;

  // 1. channels (before resizing, as PIL's convert comes before the transforms).
  Image img{image.height, image.width, channels, {}};
  if (image.channels == channels) {
    img.pixels = image.pixels;
  } else if (channels == 3) {
    img.pixels.resize(image.height * image.width * 3);
    for (int64_t i = 0; i < image.height * image.width; ++i) {
      img.pixels[3 * i] = img.pixels[3 * i + 1] = img.pixels[3 * i + 2] = image.pixels[i];
    }
  } else {
    // PIL's "L": L = R * 299/1000 + G * 587/1000 + B * 114/1000, rounded on 8-bit input.
    img.pixels.resize(image.height * image.width);
    for (int64_t i = 0; i < image.height * image.width; ++i) {
      const float* rgb = &image.pixels[3 * i];
      img.pixels[i] = std::round(0.299f * rgb[0] + 0.587f * rgb[1] + 0.114f * rgb[2]);
    }
  }
  // 2. resize the shorter side (torchvision: the longer side is truncated, not rounded).
  if (const int64_t s = p.resize_shorter_side(); s > 0) {
    const bool wide = img.width >= img.height;
    const int64_t shorter = wide ? img.height : img.width;
    const int64_t longer = wide ? img.width : img.height;
    const int64_t new_long = s * longer / shorter;
    const int64_t oh = wide ? s : new_long, ow = wide ? new_long : s;
    // A thin image grows by s / shorter on both sides: bound the result, not just the file.
    if (new_long > kMaxImagePixels / s) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": image is ", img.width, "x", img.height, "; resizing its shorter side to ", s,
          " gives ", ow, "x", oh, ", more than ", kMaxImagePixels, " pixels"));
    }
    if (oh != img.height || ow != img.width) img = ResizeBilinear(img, oh, ow);
  }
  // 3. centre crop.
  int64_t top = 0, left = 0, h = img.height, w = img.width;
  if (p.center_crop_size() == 2) {
    h = p.center_crop(0);
    w = p.center_crop(1);
    if (h > img.height || w > img.width) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": image is ", img.width, "x", img.height,
                       p.resize_shorter_side() > 0 ? " after resizing" : "",
                       ", smaller than the centre crop ", w, "x", h));
    }
    // Python's round() of (size - crop) / 2: half to even, as std::nearbyint by default.
    top = static_cast<int64_t>(std::nearbyint((img.height - h) / 2.0));
    left = static_cast<int64_t>(std::nearbyint((img.width - w) / 2.0));
  }
  if ((height > 0 && h != height) || (width > 0 && w != width)) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": image is ", image.width, "x", image.height,
                     (p.resize_shorter_side() > 0 || p.center_crop_size() > 0)
                         ? absl::StrCat(" (", w, "x", h, " after preprocessing)")
                         : "",
                     ", the model expects ", width, "x", height, " (width x height)"));
  }
  // 4. scale, normalize, planar; 5. channel order.
  const bool bgr = p.channel_order() == "BGR";
  Tensor t;
  t.shape = {1, channels, h, w};
  t.data.resize(channels * h * w);
  for (int64_t k = 0; k < channels; ++k) {
    const int64_t src = bgr ? channels - 1 - k : k;
    const float mean = p.mean().empty() ? 0.0f : p.mean(p.mean_size() == 1 ? 0 : k);
    const float std = p.std().empty() ? 1.0f : p.std(p.std_size() == 1 ? 0 : k);
    for (int64_t y = 0; y < h; ++y) {
      for (int64_t x = 0; x < w; ++x) {
        const float v = img.pixels[((top + y) * img.width + left + x) * channels + src] / 255.0f;
        t.data[(k * h + y) * w + x] = (v - mean) / std;
      }
    }
  }
  return t;
}

}  // namespace normserve::cli
