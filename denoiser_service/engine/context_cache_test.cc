#include "denoiser_service/engine/context_cache.h"

#include "gtest/gtest.h"

namespace dgrid {
namespace {

ContextCache::Context Context(float v) { return std::make_shared<const std::vector<float>>(3, v); }

TEST(ContextCacheTest, FindsWhatItKeptByTheIds) {
  ContextCache cache(4);
  cache.Put({49406, 320, 49407}, Context(1));
  ASSERT_NE(cache.Find({49406, 320, 49407}), nullptr);
  EXPECT_EQ((*cache.Find({49406, 320, 49407}))[0], 1.0f);
  EXPECT_EQ(cache.Find({49406, 321, 49407}), nullptr);
  EXPECT_EQ(cache.Find({49406, 320}), nullptr);  // a prefix is another prompt
}

TEST(ContextCacheTest, DropsTheLeastRecentlyUsedPastItsCapacity) {
  ContextCache cache(2);
  cache.Put({1}, Context(1));
  cache.Put({2}, Context(2));
  ASSERT_NE(cache.Find({1}), nullptr);  // {1} is now the most recent
  cache.Put({3}, Context(3));
  EXPECT_EQ(cache.size(), 2u);
  EXPECT_NE(cache.Find({1}), nullptr);
  EXPECT_EQ(cache.Find({2}), nullptr);
  EXPECT_NE(cache.Find({3}), nullptr);
}

TEST(ContextCacheTest, AKnownPromptKeepsItsContextAndZeroCapacityKeepsNothing) {
  ContextCache cache(2);
  cache.Put({1}, Context(1));
  cache.Put({1}, Context(9));
  EXPECT_EQ((*cache.Find({1}))[0], 1.0f);
  ContextCache none(0);
  none.Put({1}, Context(1));
  EXPECT_EQ(none.Find({1}), nullptr);
  EXPECT_EQ(none.size(), 0u);
}

}  // namespace
}  // namespace dgrid
