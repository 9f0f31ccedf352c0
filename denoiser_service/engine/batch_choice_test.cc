#include "denoiser_service/engine/batch_choice.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dgrid {
namespace {

using ::testing::ElementsAre;

// The example at the top of batch_choice.h, as written there.
TEST(BatchChoiceTest, HeaderExample) {
  BatchChoice choice;
  std::vector<BatchCandidate> candidates = {{1, 4000, 0, 2}, {2, 10, 1, 2}};
  EXPECT_THAT(choice.Choose(candidates, 2), ElementsAre(1));
  EXPECT_EQ(choice.keys(), 2u);
}

TEST(BatchChoiceTest, OneKeyIsOldestFirst) {
  BatchChoice choice;
  std::vector<BatchCandidate> c(6, {7, 100, 0, 1});
  EXPECT_THAT(choice.Choose(c, 4), ElementsAre(0, 1, 2, 3));
}

TEST(BatchChoiceTest, LowerRanksFirstThenKeysInArrivalOrder) {
  BatchChoice choice;
  // Keys 30 and 10 rank 5000 (30 arrived first), key 20 ranks 1000 and came
  // last: 20's go first, then 30's, then 10's, each key oldest first.
  std::vector<BatchCandidate> c = {{30, 5000, 0, 1}, {30, 5000, 0, 1}, {10, 5000, 1, 1},
                                   {10, 5000, 1, 1}, {20, 1000, 2, 1}, {20, 1000, 2, 1}};
  EXPECT_THAT(choice.Choose(c, 2), ElementsAre(4, 5));
  EXPECT_THAT(choice.Choose(c, 4), ElementsAre(0, 1, 4, 5));
  EXPECT_THAT(choice.Choose(c, 5), ElementsAre(0, 1, 2, 4, 5));
}

TEST(BatchChoiceTest, AGuidedPairThatDoesNotFitIsPassedOverButTheFirstAlwaysGoes) {
  BatchChoice choice;
  std::vector<BatchCandidate> c = {{1, 1, 0, 1}, {1, 1, 0, 2}, {1, 1, 0, 1}};
  // 1 row, then the guided pair does not fit in 3 - 1 = 2? It does: 3 rows.
  EXPECT_THAT(choice.Choose(c, 3), ElementsAre(0, 1));
  // With 2 rows the pair is passed over for the later single row.
  EXPECT_THAT(choice.Choose(c, 2), ElementsAre(0, 2));
  // max_batch 1: the first pick goes in even when guided.
  std::vector<BatchCandidate> guided = {{1, 1, 0, 2}};
  EXPECT_THAT(choice.Choose(guided, 1), ElementsAre(0));
}

TEST(BatchChoiceTest, NoCandidatesChoosesNothing) {
  BatchChoice choice;
  EXPECT_TRUE(choice.Choose({}, 8).empty());
  EXPECT_EQ(choice.keys(), 0u);
}

}  // namespace
}  // namespace dgrid
