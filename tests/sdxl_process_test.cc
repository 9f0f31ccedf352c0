// SDXL-shaped bundles through the real pair (issue 27), on the fixture's tiny
// random model (tests/fixtures/make_sdxl_fixture.py: two text encoders, a
// pooled embedding and size/crop time_ids): the size conditioning changes
// the cells, a grid is the same on 1 and 2 replicas, the cache keeps sizes
// apart, an empty negative prompt is the zero encoding, and a model without
// size ids refuses a size by name.
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
using testing::StackOptions;

v1::GridRequest Request() {
  v1::GridRequest r;
  r.set_prompt("a photo of a cat");
  r.set_seed(31);
  r.mutable_steps()->set_value(10);
  r.mutable_branches()->set_value(2);
  for (int k : {0, 4, 8}) r.add_branch_steps(k);
  return r;
}

v1::GridRequest Sized(int original_height, int original_width, int crop_top, int crop_left) {
  v1::GridRequest r = Request();
  r.mutable_size()->set_original_height(original_height);
  r.mutable_size()->set_original_width(original_width);
  r.mutable_size()->set_crop_top(crop_top);
  r.mutable_size()->set_crop_left(crop_left);
  return r;
}

// Every cell of `a` differs from the same cell of `b`.
void ExpectEveryCellDiffers(const v1::Grid& a, const v1::Grid& b, const std::string& what) {
  const std::vector<std::string> x = CellImages(a), y = CellImages(b);
  ASSERT_EQ(x.size(), 6u) << what;
  ASSERT_EQ(x.size(), y.size()) << what;
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NE(x[i], y[i]) << what << ", cell " << i;
}

class SdxlGridTest : public testing::SharedStackTest<SdxlGridTest> {
 public:
  static constexpr char kName[] = "sdxl";
  static StackOptions Options() {
    return ServingStack(FixtureDir("textxl"));
  }
};

TEST_F(SdxlGridTest, DifferentSizesGiveDifferentCellsAndTheCacheKeepsThemApart) {
  const v1::Grid plain = MustCreateGrid(*stack_, Request());
  // The plan names the defaults it filled in (the fixture's default_size).
  EXPECT_EQ(plain.plan().size().original_height(), 32);
  EXPECT_EQ(plain.plan().size().target_width(), 32);
  const v1::Grid smaller = MustCreateGrid(*stack_, Sized(16, 16, 0, 0));
  EXPECT_EQ(smaller.cache_hits(), 0);
  ExpectEveryCellDiffers(plain, smaller, "original size 16x16");
  const v1::Grid cropped = MustCreateGrid(*stack_, Sized(0, 0, 8, 8));
  EXPECT_EQ(cropped.cache_hits(), 0);
  ExpectEveryCellDiffers(plain, cropped, "crop 8x8");
  // The defaults given explicitly are the same trajectories: all cached.
  const v1::Grid explicit_default = MustCreateGrid(*stack_, Sized(32, 32, 0, 0));
  EXPECT_EQ(explicit_default.model_evals(), 0);
  EXPECT_EQ(CellImages(explicit_default), CellImages(plain));
}

// Through the pair, the empty negative prompt and one that tokenizes as it
// does give other cells (that the first is the zero encoding is not checked
// here).
TEST_F(SdxlGridTest, AnEmptyNegativePromptIsNotTheEmptyPromptsEncoding) {
  // " " tokenizes as "" does, but is not empty: it gets the encoding of "".
  v1::GridRequest spaced = Request();
  spaced.set_negative_prompt(" ");
  ExpectEveryCellDiffers(MustCreateGrid(*stack_, Request()), MustCreateGrid(*stack_, spaced),
                         "negative prompt \"\" against \" \"");
}

// Per-segment conditioning (a prompt switch) carries the switched prompt's
// pooled embedding too: switching at step 0 with the trunk's noise is the
// plain grid of the new prompt, byte for byte.
TEST_F(SdxlGridTest, ASwitchAtStepZeroWithTrunkNoiseIsThePlainGridOfTheNewPrompt) {
  v1::GridRequest switched = Request();
  switched.set_switch_prompt("a red car on a snowy road");
  switched.set_branch_noise(v1::BRANCH_NOISE_TRUNK);
  switched.clear_branches();
  switched.clear_branch_steps();
  switched.add_branch_steps(0);
  v1::GridRequest plain = Request();
  plain.set_prompt("a red car on a snowy road");
  plain.clear_branch_steps();
  plain.add_branch_steps(0);
  const v1::Grid a = MustCreateGrid(*stack_, switched);
  const v1::Grid b = MustCreateGrid(*stack_, plain);
  ASSERT_EQ(a.rows_size(), 1);
  ASSERT_EQ(a.rows(0).cells_size(), 1);
  EXPECT_EQ(a.rows(0).cells(0).png(), b.trunk().png());
  EXPECT_NE(a.rows(0).cells(0).png(), a.trunk().png());
}

TEST_F(SdxlGridTest, ASizeOutsideTheRangeIsRefusedByField) {
  grpc::ClientContext context;
  v1::Grid grid;
  const grpc::Status status =
      stack_->Orchestrator()->CreateGrid(&context, Sized(-1, 0, 0, 0), &grid);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("size.original_height"), std::string::npos)
      << status.error_message();
}

TEST(SdxlReplicaTest, AGridIsTheSameOnOneAndTwoReplicas) {
  EXPECT_EQ(testing::ExpectSameCellsOnOneAndTwoReplicas(FixtureDir("textxl"),
                                                        Sized(24, 20, 4, 2), "sdxl"),
            6u);
}

TEST(SdxlClassModelTest, AModelWithoutSizeIdsRefusesASizeByName) {
  auto stack = Stack::Start(ServingStack(FixtureDir("textlatent")), "sdxl-refuse");
  ASSERT_TRUE(stack.ok()) << stack.status();
  grpc::ClientContext context;
  v1::Grid grid;
  const grpc::Status status =
      (*stack)->Orchestrator()->CreateGrid(&context, Sized(16, 16, 0, 0), &grid);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("size: textlatent takes no size conditioning"),
            std::string::npos)
      << status.error_message();
}

}  // namespace
}  // namespace dgrid
