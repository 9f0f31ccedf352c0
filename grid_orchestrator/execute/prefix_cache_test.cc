#include "grid_orchestrator/execute/prefix_cache.h"

#include <cmath>

#include "gtest/gtest.h"

namespace dgrid {
namespace {

CacheEntry Entry(size_t bytes) {
  CacheEntry e;
  e.png.assign(bytes, 'x');
  return e;
}

TEST(PrefixCacheTest, StaysWithinItsBoundUnderDistinctKeys) {
  PrefixCache cache(100 << 10);
  for (int i = 0; i < 10000; ++i) {
    cache.Put("key" + std::to_string(i), Entry(1000));
    ASSERT_LE(cache.bytes(), size_t{100} << 10) << i;
  }
  EXPECT_GT(cache.entries(), 50u);
  EXPECT_LT(cache.entries(), 110u);
  // The newest survive, the oldest were evicted.
  EXPECT_TRUE(cache.Find("key9999").has_value());
  EXPECT_FALSE(cache.Find("key0").has_value());
}

TEST(PrefixCacheTest, EvictsLeastRecentlyUsed) {
  PrefixCache cache(3 * (1000 + 256 + 4));
  cache.Put("a", Entry(1000));
  cache.Put("b", Entry(1000));
  cache.Put("c", Entry(1000));
  ASSERT_TRUE(cache.Find("a").has_value());  // a is now the most recent
  cache.Put("d", Entry(1000));
  EXPECT_TRUE(cache.Find("a").has_value());
  EXPECT_FALSE(cache.Find("b").has_value());
  EXPECT_TRUE(cache.Find("c").has_value());
  EXPECT_TRUE(cache.Find("d").has_value());
}

TEST(PrefixCacheTest, KeysSeparateWhatDeterminesATrajectory) {
  const Path trunk{7, {{0, 100}}};
  const Path branch = trunk.BranchAt(20, 5);
  // The latent at step 20 depends only on the segments below 20: trunk and
  // branch share it; at step 21 they differ.
  EXPECT_EQ(PrefixCache::CaptureKey("s", trunk, 20), PrefixCache::CaptureKey("s", branch, 20));
  EXPECT_NE(PrefixCache::CaptureKey("s", trunk, 21), PrefixCache::CaptureKey("s", branch, 21));
  EXPECT_NE(PrefixCache::FinalKey("s", trunk), PrefixCache::FinalKey("s", branch));
  EXPECT_NE(PrefixCache::FinalKey("s", trunk), PrefixCache::FinalKey("t", trunk));
  EXPECT_NE(PrefixCache::CaptureKey("s", Path{8, {{0, 100}}}, 20),
            PrefixCache::CaptureKey("s", trunk, 20));
}

GridPlanSpec Plan() {
  GridPlanSpec plan;
  plan.model = "fashion-mnist";
  plan.model_version = "1";
  plan.prompt = "dress";
  plan.class_index = 3;
  plan.eta = 1.0f;
  plan.guidance = 1.5f;
  return plan;
}

TEST(PrefixCacheTest, SamplerKeyCarriesTheSampler) {
  GridPlanSpec euler = Plan();
  euler.sampler = Sampler::kEulerAncestral;
  // The same path under another sampler is another trajectory.
  EXPECT_NE(PrefixCache::SamplerKey(Plan()), PrefixCache::SamplerKey(euler));
}

TEST(PrefixCacheTest, SamplerKeyCarriesTheSizeConditioning) {
  GridPlanSpec sized = Plan();
  sized.size_ids = true;
  sized.size = {32, 32, 0, 0, 32, 32};
  // Each of the six numbers is its own trajectory (SDXL's time_ids).
  for (int field = 0; field < 6; ++field) {
    GridPlanSpec other = sized;
    int* values[] = {&other.size.original_height, &other.size.original_width,
                     &other.size.crop_top,        &other.size.crop_left,
                     &other.size.target_height,   &other.size.target_width};
    *values[field] += 8;
    EXPECT_NE(PrefixCache::SamplerKey(sized), PrefixCache::SamplerKey(other)) << field;
  }
  // Swapping height and width is another size, not the same key.
  GridPlanSpec swapped = sized;
  swapped.size = {32, 16, 0, 0, 32, 32};
  GridPlanSpec transposed = sized;
  transposed.size = {16, 32, 0, 0, 32, 32};
  EXPECT_NE(PrefixCache::SamplerKey(swapped), PrefixCache::SamplerKey(transposed));
  EXPECT_NE(PrefixCache::SamplerKey(Plan()), PrefixCache::SamplerKey(sized));
}

TEST(PrefixCacheTest, SamplerKeyCarriesTheModelVersion) {
  GridPlanSpec rolled = Plan();
  rolled.model_version = "2";
  // After a rolling update, old cells must not be served beside new ones.
  EXPECT_NE(PrefixCache::SamplerKey(Plan()), PrefixCache::SamplerKey(rolled));
}

TEST(PrefixCacheTest, SamplerKeyHoldsFloatsExactly) {
  GridPlanSpec a = Plan(), b = Plan();
  // Equal to six significant digits, yet different samplers.
  a.guidance = 1.5000001f;
  b.guidance = 1.5000002f;
  ASSERT_NE(a.guidance, b.guidance);
  EXPECT_NE(PrefixCache::SamplerKey(a), PrefixCache::SamplerKey(b));
  a.eta = 0.1234567f;
  b = a;
  b.eta = std::nextafter(a.eta, 1.0f);
  EXPECT_NE(PrefixCache::SamplerKey(a), PrefixCache::SamplerKey(b));
  EXPECT_EQ(PrefixCache::SamplerKey(a), PrefixCache::SamplerKey(a));
}

TEST(PrefixCacheTest, SamplerKeyHoldsThePromptAndModelUnambiguously) {
  GridPlanSpec a = Plan(), b = Plan();
  b.prompt = "a dress";
  EXPECT_NE(PrefixCache::SamplerKey(a), PrefixCache::SamplerKey(b));
  b = Plan();
  b.negative_prompt = "blurry";
  EXPECT_NE(PrefixCache::SamplerKey(a), PrefixCache::SamplerKey(b));
  // A separator inside a value cannot make two plans collide.
  a.model = "m|version=1";
  a.model_version = "";
  b = Plan();
  b.model = "m";
  b.model_version = "1";
  b.prompt = a.prompt;
  EXPECT_NE(PrefixCache::SamplerKey(a), PrefixCache::SamplerKey(b));
}

// Issue 24: a key held a whole prompt (8 MiB prompts took the orchestrator
// past its memory limit). Long values go in as a digest, and still apart.
TEST(PrefixCacheTest, SamplerKeyHoldsADigestOfALongPrompt) {
  GridPlanSpec a = Plan(), b = Plan();
  a.prompt = std::string(4096, 'p');
  b.prompt = a.prompt;
  b.prompt.back() = 'q';  // differs only in its last byte
  EXPECT_NE(PrefixCache::SamplerKey(a), PrefixCache::SamplerKey(b));
  EXPECT_EQ(PrefixCache::SamplerKey(a), PrefixCache::SamplerKey(a));
  EXPECT_LT(PrefixCache::SamplerKey(a).size(), 400u);
  b.prompt = Plan().prompt;
  b.negative_prompt = a.prompt;
  EXPECT_NE(PrefixCache::SamplerKey(a), PrefixCache::SamplerKey(b));
}

// The bytes a cache counts are the bytes it holds: each key once, and
// entries leave when the bound is reached.
TEST(PrefixCacheTest, CountsEachKeyOnceAndStaysWithinItsBound) {
  const std::string long_key(10000, 'k');
  PrefixCache cache(100000);
  cache.Put(long_key + "1", Entry(10));
  const size_t one = cache.bytes();
  EXPECT_GE(one, long_key.size());
  EXPECT_LT(one, 2 * long_key.size());
  for (int i = 0; i < 40; ++i) cache.Put(long_key + std::to_string(i), Entry(10));
  EXPECT_LE(cache.bytes(), 100000u);
  EXPECT_LT(cache.entries(), 10u);
  EXPECT_TRUE(cache.Find(long_key + "39").has_value());
  EXPECT_FALSE(cache.Find(long_key + "1").has_value());
  // Replacing an entry keeps the count right.
  const size_t before = cache.bytes();
  cache.Put(long_key + "39", Entry(10));
  EXPECT_EQ(cache.bytes(), before);
}

// Issue 25: two paths that differ only in a segment's prompt are different
// trajectories from that segment's step on.
TEST(PrefixCacheTest, KeysTellApartPathsThatDifferOnlyInASegmentsPrompt) {
  const Path trunk{8, {{0, 100}}};
  const Path apple = trunk.BranchAt(10, 100, SegmentConditioning{"red apple", "", -1});
  const Path pear = trunk.BranchAt(10, 100, SegmentConditioning{"pear", "", -1});
  const Path blurry = trunk.BranchAt(10, 100, SegmentConditioning{"red apple", "blurry", -1});
  const Path cls = trunk.BranchAt(10, 100, SegmentConditioning{"", "", 2});
  EXPECT_NE(PrefixCache::FinalKey("s", apple), PrefixCache::FinalKey("s", pear));
  EXPECT_NE(PrefixCache::FinalKey("s", apple), PrefixCache::FinalKey("s", blurry));
  EXPECT_NE(PrefixCache::FinalKey("s", apple), PrefixCache::FinalKey("s", trunk.BranchAt(10, 100)));
  EXPECT_NE(PrefixCache::FinalKey("s", cls), PrefixCache::FinalKey("s", trunk.BranchAt(10, 100)));
  EXPECT_NE(PrefixCache::CaptureKey("s", apple, 11), PrefixCache::CaptureKey("s", pear, 11));
  // Up to the switch they share the trunk's latents.
  EXPECT_EQ(PrefixCache::CaptureKey("s", apple, 10), PrefixCache::CaptureKey("s", pear, 10));
  EXPECT_EQ(PrefixCache::CaptureKey("s", apple, 10), PrefixCache::CaptureKey("s", trunk, 10));
}

TEST(PrefixCacheTest, AZeroSizedCacheHoldsNothing) {
  PrefixCache cache(0);
  cache.Put("a", Entry(10));
  EXPECT_EQ(cache.entries(), 0u);
  EXPECT_FALSE(cache.Find("a").has_value());
}

}  // namespace
}  // namespace dgrid
