#include "grid_orchestrator/assemble/surface_png.h"

#include <cstdint>
#include <cstring>
#include <vector>

#include "common/png_image.h"

namespace dgrid {

absl::StatusOr<std::string> SurfacePng(cairo_surface_t* surface) {
  if (cairo_surface_get_type(surface) != CAIRO_SURFACE_TYPE_IMAGE ||
      cairo_image_surface_get_format(surface) != CAIRO_FORMAT_RGB24) {
    return absl::InvalidArgumentError("figure PNG: not an RGB24 image surface");
  }
  const int width = cairo_image_surface_get_width(surface);
  const int height = cairo_image_surface_get_height(surface);
  const int stride = cairo_image_surface_get_stride(surface);
  const unsigned char* data = cairo_image_surface_get_data(surface);
  // RGB24: one native-endian 32-bit word per pixel, 0x00RRGGBB.
  std::vector<uint8_t> rgb(static_cast<size_t>(width) * height * 3);
  uint8_t* out = rgb.data();
  for (int y = 0; y < height; ++y) {
    const unsigned char* row = data + static_cast<size_t>(y) * stride;
    for (int x = 0; x < width; ++x) {
      uint32_t pixel;
      std::memcpy(&pixel, row + 4 * x, sizeof(pixel));
      *out++ = static_cast<uint8_t>(pixel >> 16);
      *out++ = static_cast<uint8_t>(pixel >> 8);
      *out++ = static_cast<uint8_t>(pixel);
    }
  }
  return EncodePng(rgb, width, height, 3);
}

}  // namespace dgrid
