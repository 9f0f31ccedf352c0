// 8-bit images: from latents in a value range to pixels, and to PNG bytes
// with libpng.
//
//   std::vector<uint8_t> px = ToPixels(latent, -1.0, 1.0);
//   ASSIGN_OR_RETURN(std::string png, EncodePng(px, 28, 28, 1));
//
// Protobuf-free.
#ifndef DGRID_COMMON_PNG_IMAGE_H_
#define DGRID_COMMON_PNG_IMAGE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace dgrid {

// Maps [lo, hi] to 0..255 with clamping and rounding. A CHW input with C > 1
// becomes HWC when `channels` > 1.
std::vector<uint8_t> ToPixels(absl::Span<const float> chw, int channels, double lo, double hi);

// `pixels` is row-major HWC, channels 1 (grey), 3 (RGB) or 4 (RGBA).
absl::StatusOr<std::string> EncodePng(absl::Span<const uint8_t> pixels, int width, int height,
                                      int channels);

// Decodes an 8-bit PNG (grey, RGB or RGBA) for tests and tools.
struct DecodedPng {
  int width = 0;
  int height = 0;
  int channels = 0;
  std::vector<uint8_t> pixels;
};
absl::StatusOr<DecodedPng> DecodePng(absl::Span<const uint8_t> png);

// The same for an image from a client: INVALID_ARGUMENT unless it is
// `width` x `height`, checked on the header before any pixel is decoded.
absl::StatusOr<DecodedPng> DecodePngOfSize(absl::Span<const uint8_t> png, int width,
                                           int height);

}  // namespace dgrid

#endif  // DGRID_COMMON_PNG_IMAGE_H_
