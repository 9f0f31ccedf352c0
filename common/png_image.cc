#include "common/png_image.h"

#include <png.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace dgrid {
namespace {

// 8192 x 8192: past any model's image, far below what a header may claim.
constexpr uint64_t kMaxPngPixels = uint64_t{1} << 26;

png_uint_32 FormatFor(int channels) {
  switch (channels) {
    case 1:
      return PNG_FORMAT_GRAY;
    case 3:
      return PNG_FORMAT_RGB;
    default:
      return PNG_FORMAT_RGBA;
  }
}

}  // namespace

std::vector<uint8_t> ToPixels(absl::Span<const float> chw, int channels, double lo, double hi) {
  const size_t plane = chw.size() / std::max(channels, 1);
  std::vector<uint8_t> out(chw.size());
  const double scale = 255.0 / (hi - lo);
  for (int c = 0; c < channels; ++c) {
    for (size_t i = 0; i < plane; ++i) {
      double v = std::round((chw[c * plane + i] - lo) * scale);
      if (!(v >= 0)) v = 0;  // also maps NaN to 0
      out[i * channels + c] = static_cast<uint8_t>(std::min(v, 255.0));
    }
  }
  return out;
}

absl::StatusOr<std::string> EncodePng(absl::Span<const uint8_t> pixels, int width, int height,
                                      int channels) {
  if (channels != 1 && channels != 3 && channels != 4) {
    return absl::InvalidArgumentError(absl::StrCat("png: unsupported channel count ", channels));
  }
  if (width <= 0 || height <= 0 ||
      pixels.size() != static_cast<size_t>(width) * height * channels) {
    return absl::InvalidArgumentError("png: pixel buffer does not match width x height");
  }
  // Everything with a destructor lives outside the setjmp frame below.
  std::string out;
  std::string error;
  png_structp png = png_create_write_struct(
      PNG_LIBPNG_VER_STRING, &error,
      [](png_structp p, png_const_charp message) {
        *static_cast<std::string*>(png_get_error_ptr(p)) = message;
        png_longjmp(p, 1);
      },
      nullptr);
  if (!png) return absl::InternalError("png: cannot create a writer");
  png_infop info = png_create_info_struct(png);
  if (!info || setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return absl::InternalError(absl::StrCat("png: ", error));
  }
  png_set_write_fn(
      png, &out,
      [](png_structp p, png_bytep data, png_size_t n) {
        static_cast<std::string*>(png_get_io_ptr(p))->append(reinterpret_cast<char*>(data), n);
      },
      nullptr);
  // A grid figure is mostly nearest-neighbour blocks: each row repeats the
  // one above (scale - 1 times in scale). The Up filter makes those rows
  // zeros, and deflate's fastest level still compresses them well: on a
  // 2203 x 1773 emoji grid's Up-filtered rows, deflate took 25 ms at level 1
  // against 49 ms at level 6, for 599 KB against 497 KB (bench/PROFILE.md).
  // The figure is encoded after its last cell, on the grid's critical path.
  png_set_filter(png, PNG_FILTER_TYPE_BASE, PNG_FILTER_UP);
  png_set_compression_level(png, 1);
  const int color = channels == 1 ? PNG_COLOR_TYPE_GRAY
                    : channels == 3 ? PNG_COLOR_TYPE_RGB
                                    : PNG_COLOR_TYPE_RGB_ALPHA;
  png_set_IHDR(png, info, width, height, 8, color, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_BASE, PNG_FILTER_TYPE_BASE);
  png_write_info(png, info);
  const size_t stride = static_cast<size_t>(width) * channels;
  for (int y = 0; y < height; ++y) {
    png_write_row(png, const_cast<png_bytep>(pixels.data() + y * stride));
  }
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

namespace {

// The bytes of the PNG's IDAT chunks together, read from its chunk list
// (each: 4 bytes of length, big-endian, 4 of type, the data, 4 of CRC).
uint64_t CompressedDataBytes(absl::Span<const uint8_t> png) {
  uint64_t total = 0;
  for (size_t at = 8; at + 8 <= png.size();) {
    const uint64_t length = (uint64_t{png[at]} << 24) | (uint64_t{png[at + 1]} << 16) |
                            (uint64_t{png[at + 2]} << 8) | png[at + 3];
    if (std::memcmp(png.data() + at + 4, "IDAT", 4) == 0) total += length;
    if (length > png.size()) break;  // libpng refuses it
    at += 12 + static_cast<size_t>(length);
  }
  return total;
}

// width and height 0: any size.
absl::StatusOr<DecodedPng> DecodePngChecked(absl::Span<const uint8_t> png, int width,
                                            int height) {
  png_image image;
  std::memset(&image, 0, sizeof(image));
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&image, png.data(), png.size())) {
    return absl::InvalidArgumentError(absl::StrCat("png: ", image.message));
  }
  if (width > 0 && (static_cast<int64_t>(image.width) != width ||
                    static_cast<int64_t>(image.height) != height)) {
    png_image_free(&image);
    return absl::InvalidArgumentError(absl::StrCat("png: the image is ", image.width, "x",
                                                   image.height, ", expected ", width, "x",
                                                   height));
  }
  // A header can claim a huge image in a few bytes: the buffer is made
  // before the data is read.
  if (static_cast<uint64_t>(image.width) * image.height > kMaxPngPixels) {
    png_image_free(&image);
    return absl::InvalidArgumentError(absl::StrCat("png: ", image.width, "x", image.height,
                                                   " pixels is more than ", kMaxPngPixels));
  }
  // Deflate makes its input at most a little larger (stored blocks), but a
  // megabyte of it can inflate to a gigabyte, all of which libpng inflates
  // after the rows it needs: a 28x28 image with 1 GB of zeros behind its
  // pixels took 2.6 s to judge. The most an image of this size needs, at 8
  // bytes a pixel, a filter byte a row and pass (Adam7), and framing.
  const uint64_t rows = uint64_t{image.height} * 8;
  const uint64_t needs = uint64_t{image.height} * (1 + uint64_t{image.width} * 8) + rows;
  const uint64_t most = needs + needs / 100 + 1024;
  if (const uint64_t compressed = CompressedDataBytes(png); compressed > most) {
    png_image_free(&image);
    return absl::InvalidArgumentError(absl::StrCat(
        "png: ", compressed, " bytes of image data is more than a ", image.width, "x",
        image.height, " image can need (", most, ")"));
  }
  DecodedPng out;
  // Grey stays grey, with its alpha (if any) dropped as RGB's is kept.
  const bool colour = (image.format & PNG_FORMAT_FLAG_COLOR) != 0;
  const bool alpha = (image.format & PNG_FORMAT_FLAG_ALPHA) != 0;
  out.channels = colour ? (alpha ? 4 : 3) : 1;
  image.format = FormatFor(out.channels);
  out.width = image.width;
  out.height = image.height;
  out.pixels.resize(PNG_IMAGE_SIZE(image));
  if (!png_image_finish_read(&image, nullptr, out.pixels.data(), 0, nullptr)) {
    return absl::InvalidArgumentError(absl::StrCat("png: ", image.message));
  }
  return out;
}

}  // namespace

absl::StatusOr<DecodedPng> DecodePng(absl::Span<const uint8_t> png) {
  return DecodePngChecked(png, 0, 0);
}

absl::StatusOr<DecodedPng> DecodePngOfSize(absl::Span<const uint8_t> png, int width,
                                           int height) {
  return DecodePngChecked(png, width, height);
}

}  // namespace dgrid
