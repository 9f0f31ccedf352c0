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

// Linspace spacing, diffusers' default for its Euler schedulers, on the
// shipped class model, whose model takes float timesteps: at 12 steps every
// timestep but the ends has a fraction (999 / 11).
v1::GridRequest Linspace(v1::Sampler sampler) {
  v1::GridRequest r = Request(sampler);
  r.set_prompt("sneaker");
  r.set_seed(8);
  r.set_spacing(v1::SPACING_LINSPACE);
  r.mutable_steps()->set_value(12);
  return r;
}

TEST(SamplerProcessTest, ALinspaceEulerAncestralGridIsTheSameOnOneAndTwoReplicas) {
  EXPECT_EQ(testing::ExpectSameCellsOnOneAndTwoReplicas(
                testing::ModelDir(), Linspace(v1::SAMPLER_EULER_ANCESTRAL), "euler-linspace"),
            6u);
}

// The spacing is part of every cache key: the leading grid of the same
// request shares nothing with the linspace one. Rows are labelled with
// linspace's timesteps, rounded.
TEST(SamplerProcessTest, TheCacheTellsTheSpacingsApart) {
  auto stack = Stack::Start(ServingStack(testing::ModelDir()), "linspace-cache");
  ASSERT_TRUE(stack.ok()) << stack.status();
  v1::GridRequest leading_request = Linspace(v1::SAMPLER_EULER_ANCESTRAL);
  leading_request.set_spacing(v1::SPACING_LEADING);
  const v1::Grid leading = MustCreateGrid(**stack, leading_request);
  const v1::Grid linspace = MustCreateGrid(**stack, Linspace(v1::SAMPLER_EULER_ANCESTRAL));
  EXPECT_EQ(linspace.plan().sampler().spacing(), v1::SPACING_LINSPACE);
  EXPECT_EQ(linspace.cache_hits(), 0);
  // Rows after steps 0, 4 and 8: x_T, then the last timesteps run,
  // 8 * 999 / 11 = 726.5 and 4 * 999 / 11 = 363.3.
  EXPECT_EQ(std::vector<int>(linspace.plan().timesteps().begin(),
                             linspace.plan().timesteps().end()),
            (std::vector<int>{1000, 727, 363}));
  const std::vector<std::string> a = CellImages(leading), b = CellImages(linspace);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NE(a[i], b[i]) << "cell " << i;
}

// The text fixture's model takes whole timesteps (timestep_dtype "long"):
// Euler ancestral at linspace spacing is refused naming the field, before
// any work; DDIM rounds linspace's timesteps and runs.
TEST(SamplerProcessTest, AModelOfWholeTimestepsRefusesLinspaceEulerAncestral) {
  auto stack = Stack::Start(ServingStack(FixtureDir("textlatent")), "linspace-long");
  ASSERT_TRUE(stack.ok()) << stack.status();
  v1::GridRequest euler = Request(v1::SAMPLER_EULER_ANCESTRAL);
  euler.set_spacing(v1::SPACING_LINSPACE);
  euler.mutable_steps()->set_value(12);
  grpc::ClientContext context;
  v1::Grid grid;
  const grpc::Status refused = (*stack)->Orchestrator()->CreateGrid(&context, euler, &grid);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(refused.error_message().rfind("spacing: Euler ancestral with linspace spacing runs "
                                          "fractional timesteps",
                                          0),
            0u)
      << refused.error_message();
  v1::GridRequest ddim = Request(v1::SAMPLER_DDIM);
  ddim.set_spacing(v1::SPACING_LINSPACE);
  const v1::Grid ran = MustCreateGrid(**stack, ddim);
  EXPECT_EQ(ran.plan().timesteps(1), 666);  // after step 4 of 10: 6 * 999 / 9
  EXPECT_GT(ran.model_evals(), 0);
  // At 10 steps linspace's timesteps are whole (999 / 9 = 111): Euler runs.
  euler.mutable_steps()->set_value(10);
  EXPECT_GT(MustCreateGrid(**stack, euler).model_evals(), 0);
}

}  // namespace
}  // namespace dgrid
