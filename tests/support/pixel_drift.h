// How far apart two PNG images are, for tests that compare a grid's cells
// with the same paths computed elsewhere (another batch, another replica).
#ifndef DGRID_TESTS_SUPPORT_PIXEL_DRIFT_H_
#define DGRID_TESTS_SUPPORT_PIXEL_DRIFT_H_

#include <string>

namespace dgrid::testing {

// The drift allowed between two computations of one path: the model's float
// reductions differ with batch composition, and 50 steps amplify that. In
// 8-bit pixel levels.
constexpr int kDriftTolerance = 8;

// Largest per-pixel difference in 0..255 levels; 256 if either image does not
// decode or the sizes differ.
int MaxPixelDrift(const std::string& png_a, const std::string& png_b);

}  // namespace dgrid::testing

#endif  // DGRID_TESTS_SUPPORT_PIXEL_DRIFT_H_
