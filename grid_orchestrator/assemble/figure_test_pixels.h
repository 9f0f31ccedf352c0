// For the figure tests: how many pixels of a decoded figure are near a
// colour given as Cairo takes it (channels in [0, 1]). Near, because Cairo
// keeps 16-bit channels and antialiases the ends of lines.
//
//   EXPECT_EQ(CountNear(Decode(png), {0.16, 0.40, 0.75}), 0);  // no pairwise series
#ifndef DGRID_GRID_ORCHESTRATOR_ASSEMBLE_FIGURE_TEST_PIXELS_H_
#define DGRID_GRID_ORCHESTRATOR_ASSEMBLE_FIGURE_TEST_PIXELS_H_

#include <cmath>
#include <cstdint>

#include "common/png_image.h"

namespace dgrid {

struct CairoRgb {
  double r, g, b;
};

inline int CountNear(const DecodedPng& image, CairoRgb colour, int tolerance = 2) {
  int count = 0;
  for (int i = 0; i < image.width * image.height; ++i) {
    const uint8_t* px = &image.pixels[i * image.channels];
    if (std::abs(px[0] - colour.r * 255) <= tolerance &&
        std::abs(px[1] - colour.g * 255) <= tolerance &&
        std::abs(px[2] - colour.b * 255) <= tolerance) {
      ++count;
    }
  }
  return count;
}

}  // namespace dgrid

#endif  // DGRID_GRID_ORCHESTRATOR_ASSEMBLE_FIGURE_TEST_PIXELS_H_
