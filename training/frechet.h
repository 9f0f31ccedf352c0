// Fréchet distance between two feature sets, each summarised by its mean and
// covariance (as FID does with Inception features; here the features are the
// bundle classifier's penultimate layer):
//
//   FD = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2)
//
// The product under the outer root is symmetric positive semi-definite, so
// both roots come from symmetric eigen-decompositions (eigenvalues clamped at
// 0), in double. That avoids scipy's sqrtm on the non-symmetric S1 S2 and its
// spurious imaginary parts.
//
//   FeatureMoments a = ComputeMoments(features_a, 128);  // n_a x 128, row-major
//   FeatureMoments b = ComputeMoments(features_b, 128);
//   absl::StatusOr<double> fd = FrechetDistance(a, b);
//
// Torch-free header.
#ifndef DGRID_TRAINING_FRECHET_H_
#define DGRID_TRAINING_FRECHET_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace dgrid::training {

struct FeatureMoments {
  int dim = 0;
  int64_t count = 0;
  std::vector<double> mean;  // dim
  std::vector<double> cov;   // dim x dim, row-major, unbiased (n - 1)
};

// `features` holds count = features.size() / dim rows; at least two.
absl::StatusOr<FeatureMoments> ComputeMoments(absl::Span<const float> features, int dim);

absl::StatusOr<double> FrechetDistance(const FeatureMoments& a, const FeatureMoments& b);

}  // namespace dgrid::training

#endif  // DGRID_TRAINING_FRECHET_H_
