#include "common/philox.h"

#include <cmath>

namespace dgrid {
namespace {

constexpr uint32_t kMultiplier0 = 0xD2511F53;
constexpr uint32_t kMultiplier1 = 0xCD9E8D57;
constexpr uint32_t kWeyl0 = 0x9E3779B9;
constexpr uint32_t kWeyl1 = 0xBB67AE85;

inline void MulHiLo(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  const uint64_t product = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(product >> 32);
  *lo = static_cast<uint32_t>(product);
}

// Maps a 32-bit word to (0, 1]: never 0, so log() in Box–Muller is finite.
inline double ToOpenUnit(uint32_t word) {
  return (static_cast<double>(word) + 1.0) * (1.0 / 4294967296.0);
}

}  // namespace

PhiloxCounter Philox4x32_10(PhiloxCounter c, PhiloxKey k) {
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k[0] += kWeyl0;
      k[1] += kWeyl1;
    }
    uint32_t hi0, lo0, hi1, lo1;
    MulHiLo(kMultiplier0, c[0], &hi0, &lo0);
    MulHiLo(kMultiplier1, c[2], &hi1, &lo1);
    c = {hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0};
  }
  return c;
}

void FillGaussian(const NoiseKey& key, absl::Span<float> out) {
  const PhiloxKey philox_key = {static_cast<uint32_t>(key.seed),
                                static_cast<uint32_t>(key.seed >> 32)};
  constexpr double kTwoPi = 6.283185307179586476925286766559;
  const size_t n = out.size();
  for (size_t block = 0; block * 4 < n; ++block) {
    const PhiloxCounter words = Philox4x32_10(
        {static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), key.step,
         static_cast<uint32_t>(key.stream)},
        philox_key);
    // Box–Muller in double, rounded once to float: the same bits on every
    // x86-64 host that uses the same libm.
    for (int pair = 0; pair < 2; ++pair) {
      const double radius = std::sqrt(-2.0 * std::log(ToOpenUnit(words[2 * pair])));
      const double angle = kTwoPi * ToOpenUnit(words[2 * pair + 1]);
      const size_t j = block * 4 + 2 * pair;
      if (j < n) out[j] = static_cast<float>(radius * std::cos(angle));
      if (j + 1 < n) out[j + 1] = static_cast<float>(radius * std::sin(angle));
    }
  }
}

}  // namespace dgrid
