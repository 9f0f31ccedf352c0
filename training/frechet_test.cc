#include "frechet.h"

#include <cmath>
#include <iostream>
#include <random>

#include "gtest/gtest.h"

namespace dgrid::training {
namespace {

// n rows of correlated features: a random linear mix of independent normals.
std::vector<float> Features(int n, int dim, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  std::vector<double> mix(dim * dim);
  for (double& m : mix) m = normal(rng) / std::sqrt(dim);
  std::vector<float> out(static_cast<size_t>(n) * dim);
  std::vector<double> z(dim);
  for (int i = 0; i < n; ++i) {
    for (double& v : z) v = normal(rng);
    for (int j = 0; j < dim; ++j) {
      double s = 0;
      for (int k = 0; k < dim; ++k) s += mix[j * dim + k] * z[k];
      out[i * dim + j] = static_cast<float>(s + 0.1 * j);
    }
  }
  return out;
}

double Fd(const std::vector<float>& a, const std::vector<float>& b, int dim) {
  absl::StatusOr<FeatureMoments> ma = ComputeMoments(a, dim);
  absl::StatusOr<FeatureMoments> mb = ComputeMoments(b, dim);
  EXPECT_TRUE(ma.ok() && mb.ok());
  absl::StatusOr<double> fd = FrechetDistance(*ma, *mb);
  EXPECT_TRUE(fd.ok()) << fd.status();
  return fd.value_or(-1);
}

TEST(FrechetTest, ASetIsAtDistanceZeroFromItself) {
  const std::vector<float> f = Features(2000, 32, 1);
  EXPECT_NEAR(Fd(f, f, 32), 0.0, 1e-6);
}

TEST(FrechetTest, AShiftAddsItsSquaredLengthAndTheDistanceGrowsWithIt) {
  constexpr int kDim = 16;
  const std::vector<float> f = Features(3000, kDim, 2);
  double previous = 0;
  for (double shift : {0.1, 0.5, 1.0, 2.0}) {
    std::vector<float> moved = f;
    for (size_t i = 0; i < moved.size(); i += kDim) moved[i] += static_cast<float>(shift);
    const double fd = Fd(f, moved, kDim);
    // Same covariance, means apart by `shift` along one axis.
    EXPECT_NEAR(fd, shift * shift, 1e-3 + 1e-3 * shift * shift) << "shift " << shift;
    EXPECT_GT(fd, previous);
    previous = fd;
  }
}

TEST(FrechetTest, IndependentSamplesOfOneLawAreCloseAndOtherLawsFar) {
  constexpr int kDim = 16;
  const std::vector<float> a = Features(4000, kDim, 3);
  // Same mix matrix (seed 3 draws it first), fresh rows: differs only by
  // sampling error.
  std::vector<float> b = Features(8000, kDim, 3);
  b.erase(b.begin(), b.begin() + 4000 * kDim);
  std::vector<float> wide = b;
  for (float& v : wide) v *= 1.5f;
  const double same = Fd(a, b, kDim);
  const double other = Fd(a, wide, kDim);
  std::cout << "same law: " << same << ", 1.5x wider: " << other << "\n";
  // Measured: 0.042 and 7.7.
  EXPECT_LT(same, 0.2);
  EXPECT_GT(other, 10 * same);
}

// Gaussians with covariances R D R^T that share the rotation R: the distance
// is |mu1 - mu2|^2 + sum (sqrt(d1) - sqrt(d2))^2.
TEST(FrechetTest, MatchesTheClosedFormForCommutingCovariances) {
  constexpr int kDim = 3;
  const double c = std::cos(0.7), s = std::sin(0.7);
  const double rot[kDim][kDim] = {{c, -s, 0}, {s, c, 0}, {0, 0, 1}};
  const double d1[kDim] = {4.0, 1.0, 0.25}, d2[kDim] = {1.0, 9.0, 0.25};
  FeatureMoments a{kDim, 100, {0, 0, 0}, std::vector<double>(9)};
  FeatureMoments b{kDim, 100, {1, 2, 0}, std::vector<double>(9)};
  for (int i = 0; i < kDim; ++i) {
    for (int j = 0; j < kDim; ++j) {
      for (int k = 0; k < kDim; ++k) {
        a.cov[i * kDim + j] += rot[i][k] * d1[k] * rot[j][k];
        b.cov[i * kDim + j] += rot[i][k] * d2[k] * rot[j][k];
      }
    }
  }
  const double expected = 1 + 4 + (2 - 1) * (2 - 1) + (1 - 3) * (1 - 3) + 0;
  absl::StatusOr<double> fd = FrechetDistance(a, b);
  ASSERT_TRUE(fd.ok()) << fd.status();
  EXPECT_NEAR(*fd, expected, 1e-9);
}

TEST(FrechetTest, RejectsMismatchedDimensions) {
  absl::StatusOr<FeatureMoments> a = ComputeMoments(Features(10, 4, 1), 4);
  absl::StatusOr<FeatureMoments> b = ComputeMoments(Features(10, 2, 1), 2);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_FALSE(FrechetDistance(*a, *b).ok());
  EXPECT_FALSE(ComputeMoments(std::vector<float>(7), 4).ok());
}

}  // namespace
}  // namespace dgrid::training
