#include "common/png_image.h"

#include <png.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace dgrid {
namespace {

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
  png_image image;
  std::memset(&image, 0, sizeof(image));
  image.version = PNG_IMAGE_VERSION;
  image.width = width;
  image.height = height;
  image.format = FormatFor(channels);
  png_alloc_size_t size = 0;
  if (!png_image_write_to_memory(&image, nullptr, &size, 0, pixels.data(), 0, nullptr)) {
    return absl::InternalError(absl::StrCat("png: ", image.message));
  }
  std::string out(size, '\0');
  if (!png_image_write_to_memory(&image, out.data(), &size, 0, pixels.data(), 0, nullptr)) {
    return absl::InternalError(absl::StrCat("png: ", image.message));
  }
  out.resize(size);
  return out;
}

namespace {

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
  DecodedPng out;
  out.channels = PNG_IMAGE_SAMPLE_CHANNELS(image.format) >= 3 ? 3 : 1;
  if (image.format & PNG_FORMAT_FLAG_ALPHA) out.channels = out.channels == 3 ? 4 : 3;
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
