// The Euler ancestral sampler through the real pair (issue 27), on the
// fixture's tiny text model: a grid names its sampler, its cells are the same
// on 1 and 2 replicas, and neither its cells nor its cache entries are
// DDIM's.
#include <grpcpp/grpcpp.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/support/grids.h"
#include "tests/support/stack.h"

namespace dgrid {
namespace {

using testing::CellImages;
using testing::FixtureDir;
using testing::MustCreateGrid;
using testing::ServingStack;
using testing::Stack;

v1::GridRequest Request(v1::Sampler sampler) {
  v1::GridRequest r;
  r.set_prompt("a photo of a cat");
  r.set_seed(21);
  r.set_sampler(sampler);
  r.mutable_steps()->set_value(10);
  r.mutable_branches()->set_value(2);
  for (int k : {0, 4, 8}) r.add_branch_steps(k);
  return r;
}

TEST(SamplerProcessTest, AnEulerAncestralGridIsTheSameOnOneAndTwoReplicas) {
  EXPECT_EQ(testing::ExpectSameCellsOnOneAndTwoReplicas(
                FixtureDir("textlatent"), Request(v1::SAMPLER_EULER_ANCESTRAL), "euler"),
            6u);
}

// With the cache on, an Euler ancestral grid after the DDIM grid of the same
// request hits nothing: the sampler is part of every key. Run again, it is
// served whole from the cache, byte for byte.
TEST(SamplerProcessTest, TheCacheTellsTheSamplersApart) {
  auto stack = Stack::Start(ServingStack(FixtureDir("textlatent")), "euler-cache");
  ASSERT_TRUE(stack.ok()) << stack.status();
  const v1::Grid ddim = MustCreateGrid(**stack, Request(v1::SAMPLER_DDIM));
  const v1::Grid euler = MustCreateGrid(**stack, Request(v1::SAMPLER_EULER_ANCESTRAL));
  EXPECT_EQ(euler.plan().sampler().sampler(), v1::SAMPLER_EULER_ANCESTRAL);
  EXPECT_EQ(euler.cache_hits(), 0);
  EXPECT_GT(euler.model_evals(), 0);
  const std::vector<std::string> a = CellImages(ddim), b = CellImages(euler);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NE(a[i], b[i]) << "cell " << i;
  const v1::Grid again = MustCreateGrid(**stack, Request(v1::SAMPLER_EULER_ANCESTRAL));
  EXPECT_EQ(again.model_evals(), 0);
  EXPECT_EQ(CellImages(again), b);
}

}  // namespace
}  // namespace dgrid
