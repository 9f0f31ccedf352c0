#include "grid_orchestrator/assemble/picture.h"

#include <utility>

#include "absl/types/span.h"
#include "common/png_image.h"
#include "common/status_macros.h"

namespace dgrid {

absl::StatusOr<Picture> PictureFromPng(const std::string& png) {
  ASSIGN_OR_RETURN(DecodedPng decoded,
                   DecodePng({reinterpret_cast<const uint8_t*>(png.data()), png.size()}));
  Picture out;
  out.width = decoded.width;
  out.height = decoded.height;
  if (decoded.channels != 4) {
    out.channels = decoded.channels;
    out.pixels = std::move(decoded.pixels);
    return out;
  }
  // DecodePng keeps RGBA; pictures have no alpha, and the grid's background
  // is white, so composite onto white as a viewer would.
  out.channels = 3;
  const size_t n = static_cast<size_t>(decoded.width) * decoded.height;
  out.pixels.resize(n * 3);
  for (size_t i = 0; i < n; ++i) {
    const int alpha = decoded.pixels[i * 4 + 3];
    for (int c = 0; c < 3; ++c) {
      const int v = decoded.pixels[i * 4 + c];
      out.pixels[i * 3 + c] = static_cast<uint8_t>((v * alpha + 255 * (255 - alpha) + 127) / 255);
    }
  }
  return out;
}

}  // namespace dgrid
