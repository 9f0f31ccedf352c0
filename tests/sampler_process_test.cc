// The Euler ancestral sampler through the real pair (issue 27), on the
// fixture's tiny text model: a grid names its sampler, its cells are the same
// on 1 and 2 replicas, and neither its cells nor its cache entries are
// DDIM's.
#include <grpcpp/grpcpp.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/support/stack.h"

namespace dgrid {
namespace {

using testing::Stack;
using testing::StackOptions;

std::string TextModelDir() {
  const char* dir = std::getenv("DGRID_FIXTURES");
  return absl::StrCat(dir ? dir : "build/fixtures", "/textlatent");
}

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

v1::Grid MustCreate(const Stack& stack, const v1::GridRequest& request) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
  v1::Grid grid;
  const grpc::Status status = stack.Orchestrator()->CreateGrid(&context, request, &grid);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return grid;
}

std::vector<std::string> Cells(const v1::Grid& grid) {
  std::vector<std::string> cells;
  for (const v1::GridRow& row : grid.rows()) {
    for (const v1::GridCell& cell : row.cells()) cells.push_back(cell.png());
  }
  return cells;
}

TEST(SamplerProcessTest, AnEulerAncestralGridIsTheSameOnOneAndTwoReplicas) {
  std::vector<std::vector<std::string>> results;
  for (int denoisers : {1, 2}) {
    StackOptions options;
    options.model_dir = TextModelDir();
    options.denoisers = denoisers;
    options.orchestrator_flags = {"--cache_mb=0"};
    auto stack = Stack::Start(options, absl::StrCat("euler-", denoisers));
    ASSERT_TRUE(stack.ok()) << stack.status();
    const v1::Grid grid = MustCreate(**stack, Request(v1::SAMPLER_EULER_ANCESTRAL));
    EXPECT_EQ(grid.plan().sampler().sampler(), v1::SAMPLER_EULER_ANCESTRAL);
    results.push_back(Cells(grid));
  }
  ASSERT_EQ(results[0].size(), 6u);
  EXPECT_EQ(results[0], results[1]);
}

// With the cache on, an Euler ancestral grid after the DDIM grid of the same
// request hits nothing: the sampler is part of every key. Run again, it is
// served whole from the cache, byte for byte.
TEST(SamplerProcessTest, TheCacheTellsTheSamplersApart) {
  StackOptions options;
  options.model_dir = TextModelDir();
  options.denoisers = 1;
  auto stack = Stack::Start(options, "euler-cache");
  ASSERT_TRUE(stack.ok()) << stack.status();
  const v1::Grid ddim = MustCreate(**stack, Request(v1::SAMPLER_DDIM));
  const v1::Grid euler = MustCreate(**stack, Request(v1::SAMPLER_EULER_ANCESTRAL));
  EXPECT_EQ(euler.cache_hits(), 0);
  EXPECT_GT(euler.model_evals(), 0);
  const std::vector<std::string> a = Cells(ddim), b = Cells(euler);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NE(a[i], b[i]) << "cell " << i;
  const v1::Grid again = MustCreate(**stack, Request(v1::SAMPLER_EULER_ANCESTRAL));
  EXPECT_EQ(again.model_evals(), 0);
  EXPECT_EQ(Cells(again), b);
}

}  // namespace
}  // namespace dgrid
