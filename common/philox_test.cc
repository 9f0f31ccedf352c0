#include "common/philox.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace dgrid {
namespace {

// Random123's published known-answer vectors for Philox4x32-10.
TEST(PhiloxTest, MatchesPublishedKnownAnswers) {
  EXPECT_EQ(Philox4x32_10({0, 0, 0, 0}, {0, 0}),
            (PhiloxCounter{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
  EXPECT_EQ(Philox4x32_10({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
                          {0xffffffff, 0xffffffff}),
            (PhiloxCounter{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
  EXPECT_EQ(Philox4x32_10({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
                          {0xa4093822, 0x299f31d0}),
            (PhiloxCounter{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
}

TEST(PhiloxTest, GaussianHasUnitMomentsAndNoCorrelation) {
  std::vector<float> z(1 << 18);
  FillGaussian({123, NoiseStream::kStep, 4}, absl::MakeSpan(z));
  double sum = 0, sq = 0, lag = 0;
  for (size_t i = 0; i < z.size(); ++i) {
    sum += z[i];
    sq += double(z[i]) * z[i];
    if (i > 0) lag += double(z[i]) * z[i - 1];
  }
  const double n = z.size();
  // 5 standard errors: these fail on a broken transform, not by chance.
  EXPECT_NEAR(sum / n, 0.0, 5.0 / std::sqrt(n));
  EXPECT_NEAR(sq / n, 1.0, 5.0 * std::sqrt(2.0 / n));
  EXPECT_NEAR(lag / n, 0.0, 5.0 / std::sqrt(n));
}

TEST(PhiloxTest, PrefixIsIndependentOfLength) {
  // A latent's element j never depends on how many elements were asked for.
  std::vector<float> a(7), b(1024);
  FillGaussian({9, NoiseStream::kStep, 3}, absl::MakeSpan(a));
  FillGaussian({9, NoiseStream::kStep, 3}, absl::MakeSpan(b));
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i], b[i]) << i;
}

TEST(PhiloxTest, SeedStepAndStreamEachChangeTheNoise) {
  std::vector<float> base(16), other(16);
  FillGaussian({9, NoiseStream::kStep, 3}, absl::MakeSpan(base));
  for (const NoiseKey key : {NoiseKey{10, NoiseStream::kStep, 3},
                             NoiseKey{9, NoiseStream::kStep, 4},
                             NoiseKey{9, NoiseStream::kInitialLatent, 3},
                             NoiseKey{9 + (uint64_t{1} << 32), NoiseStream::kStep, 3}}) {
    FillGaussian(key, absl::MakeSpan(other));
    EXPECT_NE(base, other);
  }
}

}  // namespace
}  // namespace dgrid
