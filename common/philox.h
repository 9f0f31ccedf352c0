// Counter-based Gaussian noise: Philox4x32-10 (Salmon et al. 2011, as in
// cuRAND) plus Box–Muller. Noise is a pure function of (seed, stream, step,
// element index), so a trajectory's noise never depends on which batch it ran
// in, on which replica, or on the device. Never replace this with a shared
// torch generator (docs/ARCHITECTURE.md, "A trajectory is a path").
//
//   std::vector<float> z(n);
//   FillGaussian({.seed = 42, .stream = NoiseStream::kStep, .step = 7}, z);
//
// Protobuf-free: the engine includes it.
#ifndef DGRID_COMMON_PHILOX_H_
#define DGRID_COMMON_PHILOX_H_

#include <array>
#include <cstdint>

#include "absl/types/span.h"

namespace dgrid {

using PhiloxCounter = std::array<uint32_t, 4>;
using PhiloxKey = std::array<uint32_t, 2>;

// One Philox4x32 block with 10 rounds.
PhiloxCounter Philox4x32_10(PhiloxCounter counter, PhiloxKey key);

// Separate streams keep the initial latent and the per-step noise of one seed
// independent of each other.
enum class NoiseStream : uint32_t {
  kInitialLatent = 0,
  kStep = 1,
};

struct NoiseKey {
  uint64_t seed = 0;
  NoiseStream stream = NoiseStream::kStep;
  uint32_t step = 0;
};

// Fills `out` with N(0, 1) samples. Element j comes from the block with
// counter (j / 4 low, j / 4 high, step, stream) under key (seed low, seed
// high); each block's four words give two Box–Muller pairs.
void FillGaussian(const NoiseKey& key, absl::Span<float> out);

}  // namespace dgrid

#endif  // DGRID_COMMON_PHILOX_H_
