// PNG through libpng's progressive-free low-level API (the simplified png_image API would
// apply gAMA and linearize 16-bit data, which PIL does not), JPEG through libjpeg-turbo
// with its default (islow DCT, fancy upsampling: what PIL uses), Netpbm by hand: libnetpbm
// reports errors by exiting the process, which a client library cannot allow.
#include "tools/image_decode.h"

#include <jpeglib.h>
#include <png.h>

#include <csetjmp>
#include <cstdio>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace normserve::cli {
namespace {

absl::Status TooLarge(absl::string_view name, int64_t w, int64_t h) {
  return absl::InvalidArgumentError(
      absl::StrCat(name, ": image ", w, "x", h, " has more than ", kMaxImagePixels, " pixels"));
}

// ---- PNG ----

struct PngReader {
  absl::string_view bytes;
  size_t pos = 0;
  char error[200] = {0};
};

void PngRead(png_structp png, png_bytep out, png_size_t n) {
  auto* r = static_cast<PngReader*>(png_get_io_ptr(png));
  if (r->bytes.size() - r->pos < n) png_error(png, "file truncated");
  std::memcpy(out, r->bytes.data() + r->pos, n);
  r->pos += n;
}

void PngError(png_structp png, png_const_charp msg) {
  auto* r = static_cast<PngReader*>(png_get_error_ptr(png));
  std::snprintf(r->error, sizeof(r->error), "%s", msg);
  png_longjmp(png, 1);
}

void PngWarning(png_structp, png_const_charp) {}

// Plain C frame for setjmp: nothing with a destructor lives across the longjmp.
// `rows` must hold height*width*channels bytes once the header is known, so the header is
// read in a first call (rows == nullptr) and the pixels in a second.
int PngDecode(PngReader* reader, png_uint_32* w, png_uint_32* h, int* channels,
              unsigned char* rows) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, reader, PngError, PngWarning);
  if (png == nullptr) return 1;
  png_infop info = png_create_info_struct(png);
  if (info == nullptr) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    return 1;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    return 1;
  }
  png_set_read_fn(png, reader, PngRead);
  png_read_info(png, info);
  *w = png_get_image_width(png, info);
  *h = png_get_image_height(png, info);
  const int color = png_get_color_type(png, info);
  png_set_strip_16(png);
  png_set_packing(png);
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color == PNG_COLOR_TYPE_GRAY) png_set_expand_gray_1_2_4_to_8(png);
  if (color & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);
  const int interlace_passes = png_set_interlace_handling(png);
  png_read_update_info(png, info);
  *channels = png_get_channels(png, info);
  if (rows != nullptr &&
      *channels * static_cast<int64_t>(*w) != static_cast<int64_t>(png_get_rowbytes(png, info))) {
    png_error(png, "unexpected row size after the 8-bit transforms");
  }
  if (rows != nullptr) {
    for (int pass = 0; pass < interlace_passes; ++pass) {
      for (png_uint_32 y = 0; y < *h; ++y) {
        png_read_row(png, rows + static_cast<size_t>(y) * *w * *channels, nullptr);
      }
    }
  }
  png_destroy_read_struct(&png, &info, nullptr);
  return 0;
}

absl::StatusOr<Image> DecodePng(absl::string_view bytes, absl::string_view name) {
  PngReader header{bytes};
  png_uint_32 w = 0, h = 0;
  int channels = 0;
  if (PngDecode(&header, &w, &h, &channels, nullptr) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": bad PNG: ", header.error));
  }
  if (static_cast<int64_t>(w) * h > kMaxImagePixels) return TooLarge(name, w, h);
  if (channels != 1 && channels != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": PNG decodes to ", channels, " channels, expected 1 or 3"));
  }
  std::vector<unsigned char> rows(static_cast<size_t>(w) * h * channels);
  PngReader reader{bytes};
  if (PngDecode(&reader, &w, &h, &channels, rows.data()) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": bad PNG: ", reader.error));
  }
  Image img{h, w, channels, std::vector<float>(rows.begin(), rows.end())};
  return img;
}

// ---- JPEG ----

struct JpegError {
  jpeg_error_mgr mgr;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX] = {0};
};

void JpegErrorExit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  longjmp(err->jump, 1);
}

void JpegSilence(j_common_ptr) {}

// Same two-call shape as PngDecode.
int JpegDecode(const unsigned char* data, size_t size, JpegError* err, JDIMENSION* w, JDIMENSION* h,
               int* channels, unsigned char* out) {
  jpeg_decompress_struct cinfo;
  cinfo.err = jpeg_std_error(&err->mgr);
  err->mgr.error_exit = JpegErrorExit;
  err->mgr.output_message = JpegSilence;
  if (setjmp(err->jump)) {
    jpeg_destroy_decompress(&cinfo);
    return 1;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, size);
  jpeg_read_header(&cinfo, TRUE);
  if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
    std::snprintf(err->message, sizeof(err->message), "CMYK JPEG is not supported");
    jpeg_destroy_decompress(&cinfo);
    return 1;
  }
  cinfo.out_color_space = cinfo.num_components == 1 ? JCS_GRAYSCALE : JCS_RGB;
  *w = cinfo.image_width;
  *h = cinfo.image_height;
  *channels = cinfo.num_components == 1 ? 1 : 3;
  if (out != nullptr) {
    jpeg_start_decompress(&cinfo);
    while (cinfo.output_scanline < cinfo.output_height) {
      JSAMPROW row = out + static_cast<size_t>(cinfo.output_scanline) * *w * *channels;
      jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
  }
  jpeg_destroy_decompress(&cinfo);
  return 0;
}

absl::StatusOr<Image> DecodeJpeg(absl::string_view bytes, absl::string_view name) {
  const auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  JpegError err;
  JDIMENSION w = 0, h = 0;
  int channels = 0;
  if (JpegDecode(data, bytes.size(), &err, &w, &h, &channels, nullptr) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": bad JPEG: ", err.message));
  }
  if (static_cast<int64_t>(w) * h > kMaxImagePixels) return TooLarge(name, w, h);
  std::vector<unsigned char> pixels(static_cast<size_t>(w) * h * channels);
  if (JpegDecode(data, bytes.size(), &err, &w, &h, &channels, pixels.data()) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": bad JPEG: ", err.message));
  }
  return Image{h, w, channels, std::vector<float>(pixels.begin(), pixels.end())};
}

// ---- Netpbm ----

// P5 (grey) / P6 (RGB), 8 or 16 bit (big-endian samples).
absl::StatusOr<Image> DecodeNetpbm(absl::string_view bytes, absl::string_view name) {
  size_t pos = 0;
  auto token = [&]() -> absl::string_view {
    while (pos < bytes.size()) {
      if (bytes[pos] == '#') {
        while (pos < bytes.size() && bytes[pos] != '\n') ++pos;
      } else if (absl::ascii_isspace(static_cast<unsigned char>(bytes[pos]))) {
        ++pos;
      } else {
        break;
      }
    }
    const size_t start = pos;
    while (pos < bytes.size() && !absl::ascii_isspace(static_cast<unsigned char>(bytes[pos]))) {
      ++pos;
    }
    return bytes.substr(start, pos - start);
  };
  const absl::string_view magic = token();
  int64_t w = 0, h = 0, maxval = 0;
  if (!absl::SimpleAtoi(token(), &w) || !absl::SimpleAtoi(token(), &h) ||
      !absl::SimpleAtoi(token(), &maxval) || w <= 0 || h <= 0 || maxval <= 0 || maxval > 65535 ||
      w > 65536 || h > 65536) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": bad Netpbm header"));
  }
  if (w * h > kMaxImagePixels) return TooLarge(name, w, h);
  ++pos;  // the single whitespace after maxval
  const int64_t channels = magic == "P6" ? 3 : 1;
  const int64_t sample_bytes = maxval > 255 ? 2 : 1;
  const int64_t need = w * h * channels * sample_bytes;
  if (pos > bytes.size() || static_cast<int64_t>(bytes.size() - pos) < need) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": ", need, " pixel bytes expected after the Netpbm header"));
  }
  Image img{h, w, channels, std::vector<float>(w * h * channels)};
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data() + pos);
  const float scale = 255.0f / static_cast<float>(maxval);
  for (int64_t i = 0; i < w * h * channels; ++i) {
    const int v = sample_bytes == 2 ? (p[2 * i] << 8) | p[2 * i + 1] : p[i];
    img.pixels[i] = maxval == 255 ? static_cast<float>(v) : static_cast<float>(v) * scale;
  }
  return img;
}

}  // namespace

bool IsImagePath(absl::string_view path) {
  const std::string lower = absl::AsciiStrToLower(path);
  for (const char* ext : {".png", ".jpg", ".jpeg", ".pgm", ".ppm"}) {
    if (absl::EndsWith(lower, ext)) return true;
  }
  return false;
}

absl::StatusOr<Image> DecodeImage(absl::string_view bytes, absl::string_view name) {
  static constexpr unsigned char kPng[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (bytes.size() >= sizeof(kPng) && std::memcmp(bytes.data(), kPng, sizeof(kPng)) == 0) {
    return DecodePng(bytes, name);
  }
  if (bytes.size() >= 3 && static_cast<unsigned char>(bytes[0]) == 0xff &&
      static_cast<unsigned char>(bytes[1]) == 0xd8 &&
      static_cast<unsigned char>(bytes[2]) == 0xff) {
    return DecodeJpeg(bytes, name);
  }
  if (absl::StartsWith(bytes, "P5") || absl::StartsWith(bytes, "P6")) {
    return DecodeNetpbm(bytes, name);
  }
  return absl::InvalidArgumentError(
      absl::StrCat(name, ": not a PNG, JPEG or binary PGM/PPM (P5/P6) file"));
}

}  // namespace normserve::cli
