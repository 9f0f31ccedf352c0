#include "grid_orchestrator/assemble/divergence.h"

#include <cmath>
#include <limits>

namespace dgrid {

double PictureDistance(const Picture& a, const Picture& b) {
  if (a.empty() || b.empty() || a.width != b.width || a.height != b.height) {
    return std::numeric_limits<double>::quiet_NaN();
  }
  // Compare over the larger channel count, so grey vs RGB reads the grey
  // value once per colour channel.
  const int channels = a.channels > b.channels ? a.channels : b.channels;
  const size_t n = static_cast<size_t>(a.width) * a.height;
  double sum = 0;
  for (size_t i = 0; i < n; ++i) {
    for (int c = 0; c < channels; ++c) {
      const int va = a.pixels[i * a.channels + (a.channels == 1 ? 0 : c)];
      const int vb = b.pixels[i * b.channels + (b.channels == 1 ? 0 : c)];
      const double d = (va - vb) / 255.0;
      sum += d * d;
    }
  }
  return std::sqrt(sum / static_cast<double>(n * channels));
}

double MeanPairwiseDistance(const std::vector<Picture>& pictures) {
  double sum = 0;
  int pairs = 0;
  for (size_t i = 0; i < pictures.size(); ++i) {
    if (pictures[i].empty()) continue;
    for (size_t j = i + 1; j < pictures.size(); ++j) {
      if (pictures[j].empty()) continue;
      sum += PictureDistance(pictures[i], pictures[j]);
      ++pairs;
    }
  }
  return pairs == 0 ? 0 : sum / pairs;
}

double MeanDistanceTo(const Picture& reference, const std::vector<Picture>& pictures,
                      const std::vector<bool>& leave_out) {
  double sum = 0;
  int count = 0;
  for (size_t i = 0; i < pictures.size(); ++i) {
    const Picture& p = pictures[i];
    if (p.empty() || (i < leave_out.size() && leave_out[i])) continue;
    sum += PictureDistance(reference, p);
    ++count;
  }
  return count == 0 ? 0 : sum / count;
}

}  // namespace dgrid
