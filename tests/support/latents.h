// Comparing latents of one path computed in different batches.
#ifndef DGRID_TESTS_SUPPORT_LATENTS_H_
#define DGRID_TESTS_SUPPORT_LATENTS_H_

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "gtest/gtest.h"

namespace dgrid::testing {

// The largest difference between two latents. One path run in batches of
// different sizes may drift: a learned model's matrix products pick their
// kernels by size, and on some CPUs (AVX2 OpenBLAS, not AVX-512) the sums
// round differently (docs/ARCHITECTURE.md, "Counter-based noise"). An empty
// or mis-sized pair is a test failure, and NaN fails every comparison.
inline float MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.empty() || a.size() != b.size()) {
    ADD_FAILURE() << "latents of " << a.size() << " and " << b.size() << " values";
    return std::numeric_limits<float>::quiet_NaN();
  }
  float most = 0.0f;
  for (size_t i = 0; i < a.size(); ++i) most = std::max(most, std::abs(a[i] - b[i]));
  return most;
}

// Far above the drift of a fixture's few steps (about 1e-6), far below the
// difference between two paths.
inline constexpr float kBatchDrift = 1e-4f;

}  // namespace dgrid::testing

#endif  // DGRID_TESTS_SUPPORT_LATENTS_H_
