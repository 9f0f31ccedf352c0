#include "common/bearer_token.h"

#include "gtest/gtest.h"

namespace dgrid {
namespace {

TEST(BearerTokenTest, TheSchemeIsCaseInsensitiveAndTheTokenExact) {
  EXPECT_TRUE(BearerTokenMatches("Bearer s3cret", "s3cret"));
  EXPECT_TRUE(BearerTokenMatches("bearer s3cret", "s3cret"));
  EXPECT_TRUE(BearerTokenMatches("BEARER s3cret", "s3cret"));
  EXPECT_TRUE(BearerTokenMatches(BearerAuthorization("s3cret"), "s3cret"));
  EXPECT_TRUE(BearerTokenMatches("Bearer   s3cret", "s3cret"));
  EXPECT_FALSE(BearerTokenMatches("Bearer S3cret", "s3cret"));
  EXPECT_FALSE(BearerTokenMatches("Bearer s3cre", "s3cret"));
  EXPECT_FALSE(BearerTokenMatches("Bearer s3crett", "s3cret"));
  EXPECT_FALSE(BearerTokenMatches("Basic  s3cret", "s3cret"));
  EXPECT_FALSE(BearerTokenMatches("Bearers3cret ", "s3cret"));
  EXPECT_FALSE(BearerTokenMatches("", "s3cret"));
  EXPECT_FALSE(BearerTokenMatches("Bearer", ""));
  EXPECT_FALSE(BearerTokenMatches("Bearer s3cret ", "s3cret"));
}

}  // namespace
}  // namespace dgrid
