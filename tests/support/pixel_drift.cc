#include "tests/support/pixel_drift.h"

#include <algorithm>
#include <cstdlib>

#include "grid_orchestrator/assemble/grid_figure.h"

namespace dgrid::testing {

int MaxPixelDrift(const std::string& png_a, const std::string& png_b) {
  auto a = PictureFromPng(png_a), b = PictureFromPng(png_b);
  if (!a.ok() || !b.ok() || a->pixels.size() != b->pixels.size()) return 256;
  int worst = 0;
  for (size_t i = 0; i < a->pixels.size(); ++i) {
    worst = std::max(worst, std::abs(int(a->pixels[i]) - int(b->pixels[i])));
  }
  return worst;
}

}  // namespace dgrid::testing
