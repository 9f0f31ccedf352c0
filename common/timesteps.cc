#include "common/timesteps.h"

#include <algorithm>
#include <cmath>

namespace dgrid {

std::vector<int> DdimTimesteps(int train, int steps, Spacing spacing, int steps_offset) {
  std::vector<int> t(steps);
  if (spacing == Spacing::kLeading) {
    // diffusers "leading": multiples of train // steps, plus steps_offset.
    const int ratio = train / steps;
    for (int i = 0; i < steps; ++i) t[i] = (steps - 1 - i) * ratio + steps_offset;
  } else {
    // diffusers "trailing": round(arange(train, 0, -train / steps)) - 1.
    const double ratio = static_cast<double>(train) / steps;
    for (int i = 0; i < steps; ++i) t[i] = static_cast<int>(std::round(train - i * ratio)) - 1;
  }
  for (int& v : t) v = std::clamp(v, 0, train - 1);
  return t;
}

}  // namespace dgrid
