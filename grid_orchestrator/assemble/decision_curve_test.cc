#include "grid_orchestrator/assemble/decision_curve.h"

#include <cmath>

#include "gtest/gtest.h"

namespace dgrid {
namespace {

// One head; `rows[r]` are the branch labels of row r; divergence r / 10.
TrunkObservation Trunk(int label, std::vector<std::vector<int>> rows) {
  TrunkObservation t;
  t.trunk_labels = {label};
  for (size_t r = 0; r < rows.size(); ++r) {
    auto& row = t.branch_labels.emplace_back();
    for (int l : rows[r]) row.push_back({l});
    t.divergence.push_back(0.1 * r);
    t.divergence_to_trunk.push_back(0.2 * r);
  }
  return t;
}

TEST(HalfStepTest, InterpolatesBetweenTheRowsAroundTheCrossing) {
  HalfStep h = HalfStepOf({0, 10, 20}, {0.8, 0.6, 0.2});
  ASSERT_TRUE(h.found);
  EXPECT_DOUBLE_EQ(h.value, 15.0);  // 0.4 lies halfway from 0.6 down to 0.2
  h = HalfStepOf({0, 10, 20}, {0.8, 0.4, 0.1});
  ASSERT_TRUE(h.found);
  EXPECT_DOUBLE_EQ(h.value, 10.0);
}

TEST(HalfStepTest, IsNotFoundWhenTheCurveStaysAboveHalfOrStartsAtZero) {
  EXPECT_FALSE(HalfStepOf({0, 10, 20}, {0.8, 0.7, 0.5}).found);
  EXPECT_FALSE(HalfStepOf({0, 10, 20}, {0.0, 0.0, 0.0}).found);
  EXPECT_FALSE(HalfStepOf({0}, {0.5}).found);
}

TEST(DecisionCurveTest, CountsPerTrunkFractionsAndTheirSpreadAcrossTrunks) {
  CurveObservations o;
  o.branch_steps = {0, 10};
  o.heads = 1;
  o.trunks.push_back(Trunk(1, {{0, 1, 0, 0}, {1, 1, 1, 0}}));  // 3/4, 1/4 differ
  o.trunks.push_back(Trunk(2, {{2, 0, 0, 0}, {2, 2, 2, 2}}));  // 3/4, 0 differ
  absl::StatusOr<CurveStatistics> s = ComputeDecisionCurve(o);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->trunks, 2);
  ASSERT_EQ(s->heads.size(), 1u);
  const auto& p = s->heads[0].p_differs;
  EXPECT_DOUBLE_EQ(p[0].mean, 0.75);
  EXPECT_DOUBLE_EQ(p[0].standard_error, 0.0);
  EXPECT_DOUBLE_EQ(p[1].mean, 0.125);
  EXPECT_NEAR(p[1].standard_error, 0.125, 1e-12);  // sd 0.1768 over sqrt(2)
  // 0.375 is reached between step 0 (0.75) and step 10 (0.125): 0.6 of the way.
  ASSERT_TRUE(s->heads[0].half_step.found);
  EXPECT_DOUBLE_EQ(s->heads[0].half_step.value, 6.0);
  EXPECT_DOUBLE_EQ(s->divergence[1].mean, 0.1);
  EXPECT_DOUBLE_EQ(s->divergence_to_trunk[1].mean, 0.2);
  EXPECT_DOUBLE_EQ(s->divergence[1].standard_error, 0.0);
}

// A trunk's branches are not independent: when they all agree, the curve's
// error is that of N trunks, not of N x branches cells.
TEST(DecisionCurveTest, TheStandardErrorIsOverTrunksNotCells) {
  CurveObservations o;
  o.branch_steps = {0};
  o.heads = 1;
  for (int t = 0; t < 10; ++t) {
    const int l = t % 2 ? 5 : 0;  // half the trunks: every branch differs
    o.trunks.push_back(Trunk(0, {{l, l, l, l, l, l, l, l}}));
  }
  absl::StatusOr<CurveStatistics> s = ComputeDecisionCurve(o);
  ASSERT_TRUE(s.ok());
  const Estimate& p = s->heads[0].p_differs[0];
  EXPECT_DOUBLE_EQ(p.mean, 0.5);
  // sd of five 0s and five 1s is sqrt(10/36); over sqrt(10): 0.1667. The
  // binomial error of 80 cells would be 0.056.
  EXPECT_NEAR(p.standard_error, std::sqrt(10.0 / 36 / 10), 1e-12);
}

TEST(DecisionCurveTest, TheHalfStepsSpreadComesFromResamplingTrunks) {
  CurveObservations same;
  same.branch_steps = {0, 10, 20};
  same.heads = 1;
  for (int t = 0; t < 8; ++t) same.trunks.push_back(Trunk(0, {{1, 1}, {1, 0}, {0, 0}}));
  absl::StatusOr<CurveStatistics> s = ComputeDecisionCurve(same);
  ASSERT_TRUE(s.ok());
  HalfStep h = s->heads[0].half_step;
  ASSERT_TRUE(h.found);
  EXPECT_DOUBLE_EQ(h.value, 10.0);
  EXPECT_DOUBLE_EQ(h.standard_error, 0.0);  // identical trunks: every resample agrees
  EXPECT_DOUBLE_EQ(h.found_fraction, 1.0);

  CurveObservations varied = same;
  for (int t = 0; t < 8; t += 2) varied.trunks[t] = Trunk(0, {{1, 1}, {1, 1}, {0, 0}});
  s = ComputeDecisionCurve(varied);
  ASSERT_TRUE(s.ok());
  h = s->heads[0].half_step;
  ASSERT_TRUE(h.found);
  EXPECT_GT(h.standard_error, 0.5);
  EXPECT_LE(h.lo, h.value);
  EXPECT_GE(h.hi, h.value);
  EXPECT_GT(h.hi, h.lo);
}

// The bootstrap's figures, pinned: the resamples draw trunk indices by a
// method of the project's own (Lemire's, as libstdc++ draws them), not by
// std::uniform_int_distribution, whose mapping differs between standard
// libraries (libc++ gave 3.0956 and 14.2857 here).
TEST(DecisionCurveTest, TheBootstrapIsTheSameOnEveryStandardLibrary) {
  CurveObservations o;
  o.branch_steps = {0, 10, 20};
  o.heads = 1;
  o.trunks = {Trunk(0, {{1, 1}, {1, 0}, {0, 0}}), Trunk(0, {{1, 1}, {1, 1}, {0, 0}}),
              Trunk(0, {{1, 0}, {0, 0}, {0, 0}}), Trunk(0, {{1, 1}, {1, 1}, {1, 0}}),
              Trunk(0, {{1, 1}, {0, 0}, {0, 0}})};
  absl::StatusOr<CurveStatistics> s = ComputeDecisionCurve(o);
  ASSERT_TRUE(s.ok()) << s.status();
  const HalfStep& h = s->heads[0].half_step;
  ASSERT_TRUE(h.found);
  EXPECT_DOUBLE_EQ(h.value, 11.25);  // 0.9, 0.5, 0.1: half of 0.9 between steps 10 and 20
  EXPECT_NEAR(h.standard_error, 3.0866, 1e-4);
  EXPECT_NEAR(h.lo, 7.5, 1e-4);
  EXPECT_NEAR(h.hi, 14.1667, 1e-4);
  EXPECT_DOUBLE_EQ(h.found_fraction, 1.0);
}

// A resample whose curve stays above half through the last row halves after
// it: it counts in the interval as later than every found value, not as
// missing (which drew the interval early). Half the trunks halve by step 10,
// half never do; the whole curve just reaches half at the last row.
TEST(DecisionCurveTest, ResamplesThatNeverHalveCountAsLaterThanTheLastRow) {
  CurveObservations o;
  o.branch_steps = {0, 10};
  o.heads = 1;
  for (int t = 0; t < 10; ++t) {
    o.trunks.push_back(t % 2 ? Trunk(0, {{1, 1}, {0, 0}}) : Trunk(0, {{1, 1}, {1, 1}}));
  }
  absl::StatusOr<CurveStatistics> s = ComputeDecisionCurve(o);
  ASSERT_TRUE(s.ok()) << s.status();
  const HalfStep& h = s->heads[0].half_step;
  ASSERT_TRUE(h.found);  // 1.0 to 0.5: half exactly at step 10
  EXPECT_DOUBLE_EQ(h.value, 10.0);
  // Only resamples with at most half late trunks find it (about 62%).
  EXPECT_GT(h.found_fraction, 0.5);
  EXPECT_LT(h.found_fraction, 0.75);
  EXPECT_TRUE(h.hi_after_last_row);
  EXPECT_DOUBLE_EQ(h.hi, 10.0);
  EXPECT_DOUBLE_EQ(h.standard_error, 0.0);  // an SD over the found ones alone would mislead
  EXPECT_LE(h.lo, 10.0);

  // Where nearly all resamples find it, the interval closes again.
  o.trunks.clear();
  for (int t = 0; t < 10; ++t) {
    o.trunks.push_back(t < 8 ? Trunk(0, {{1, 1}, {0, 0}}) : Trunk(0, {{1, 1}, {1, 1}}));
  }
  s = ComputeDecisionCurve(o);
  ASSERT_TRUE(s.ok());
  EXPECT_FALSE(s->heads[0].half_step.hi_after_last_row);
  EXPECT_GT(s->heads[0].half_step.found_fraction, 0.9);
}

TEST(DecisionCurveTest, ACurveThatNeverHalvesHasAnIntervalPastTheLastRow) {
  CurveObservations o;
  o.branch_steps = {0, 10, 20};
  o.heads = 1;
  for (int t = 0; t < 6; ++t) {
    o.trunks.push_back(Trunk(0, {{1, 1, 1, 1}, {1, 1, 1, 1}, {1, 1, 1, 0}}));  // 1, 1, 0.75
  }
  absl::StatusOr<CurveStatistics> s = ComputeDecisionCurve(o);
  ASSERT_TRUE(s.ok());
  const HalfStep& h = s->heads[0].half_step;
  EXPECT_FALSE(h.found);
  EXPECT_DOUBLE_EQ(h.found_fraction, 0.0);
  EXPECT_TRUE(h.hi_after_last_row);
  EXPECT_DOUBLE_EQ(h.lo, 20.0);
  EXPECT_DOUBLE_EQ(h.hi, 20.0);
  EXPECT_DOUBLE_EQ(h.standard_error, 0.0);
}

// Where every trunk agrees the standard error is 0, which says nothing of
// how sure 0 or 1 is; the 95% interval does.
TEST(DecisionCurveTest, EachRowHasAnIntervalThatHoldsAtZeroAndOne) {
  CurveObservations o;
  o.branch_steps = {0, 10};
  o.heads = 1;
  for (int t = 0; t < 8; ++t) o.trunks.push_back(Trunk(0, {{1, 1}, {0, 0}}));
  absl::StatusOr<CurveStatistics> s = ComputeDecisionCurve(o);
  ASSERT_TRUE(s.ok());
  const auto& p = s->heads[0].p_differs;
  const auto& i = s->heads[0].p_differs_95;
  ASSERT_EQ(i.size(), 2u);
  EXPECT_DOUBLE_EQ(p[0].mean, 1.0);
  EXPECT_DOUBLE_EQ(p[0].standard_error, 0.0);
  EXPECT_NEAR(i[0].lo, 0.6756, 1e-4);  // Wilson, 8 of 8
  EXPECT_DOUBLE_EQ(i[0].hi, 1.0);
  EXPECT_DOUBLE_EQ(i[1].lo, 0.0);
  EXPECT_NEAR(i[1].hi, 0.3244, 1e-4);
}

TEST(WilsonIntervalTest, MatchesTheScoreInterval) {
  const Interval half = WilsonInterval(0.5, 100);
  EXPECT_NEAR(half.lo, 0.4038, 1e-4);
  EXPECT_NEAR(half.hi, 0.5962, 1e-4);
  EXPECT_NEAR(WilsonInterval(0, 100).hi, 0.0370, 1e-4);
  EXPECT_NEAR(WilsonInterval(0.1, 20).lo, 0.0279, 1e-4);
  EXPECT_NEAR(WilsonInterval(0.1, 20).hi, 0.3010, 1e-4);
  // At 0 and 1 the interval holds p exactly for every N (rounding left
  // 1 - 1e-16 above N = 10 and 3e-17 below N = 7).
  for (int n = 2; n <= 1000; ++n) {
    EXPECT_EQ(WilsonInterval(1, n).hi, 1.0) << n;
    EXPECT_EQ(WilsonInterval(0, n).lo, 0.0) << n;
  }
}

// HalfStepOf checks that each row has its step.
TEST(HalfStepTest, RowsAndStepsOfDifferentCountsHaveNoHalfStep) {
  EXPECT_FALSE(HalfStepOf({0}, {0.8, 0.2}).found);
  EXPECT_TRUE(HalfStepOf({0, 10}, {0.8, 0.2}).found);
}

TEST(DecisionCurveTest, WithoutAJudgeOnlyDivergenceIsReported) {
  CurveObservations o;
  o.branch_steps = {0, 5};
  for (int t = 0; t < 3; ++t) {
    TrunkObservation& trunk = o.trunks.emplace_back();
    trunk.divergence = {0.3 + 0.1 * t, 0.1};
    trunk.divergence_to_trunk = {0.4, 0.2};
  }
  absl::StatusOr<CurveStatistics> s = ComputeDecisionCurve(o);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(s->heads.empty());
  EXPECT_NEAR(s->divergence[0].mean, 0.4, 1e-12);
  EXPECT_NEAR(s->divergence[0].standard_error, 0.1 / std::sqrt(3.0), 1e-12);
}

TEST(DecisionCurveTest, ObservationsOfTheWrongShapeAreRefusedNamingTheTrunk) {
  CurveObservations o;
  o.branch_steps = {0, 10};
  o.heads = 1;
  o.trunks.push_back(Trunk(1, {{0, 1}, {1, 1}}));
  EXPECT_NE(ComputeDecisionCurve(o).status().message().find("at least 2 trunks"),
            std::string::npos);
  o.trunks.push_back(Trunk(1, {{0, 1}}));
  absl::Status s = ComputeDecisionCurve(o).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("trunk 1"), std::string::npos) << s;
  o.trunks[1] = Trunk(1, {{0, 1}, {}});
  o.trunks[1].divergence = {0, 0};
  o.trunks[1].divergence_to_trunk = {0, 0};
  EXPECT_NE(ComputeDecisionCurve(o).status().message().find("row 1 has no branches"),
            std::string::npos);
}

}  // namespace
}  // namespace dgrid
