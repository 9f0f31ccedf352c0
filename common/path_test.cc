#include "common/path.h"

#include "gtest/gtest.h"

namespace dgrid {
namespace {

TEST(PathTest, BranchSharesTrunkNoiseBelowItsStep) {
  const Path trunk{7, {{0, 100}}};
  const Path branch = trunk.BranchAt(10, 555);
  EXPECT_EQ(branch.segments.size(), 2u);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(branch.NoiseSeedAt(i), 100u) << i;
  for (int i = 10; i < 50; ++i) EXPECT_EQ(branch.NoiseSeedAt(i), 555u) << i;
  EXPECT_TRUE(branch.SharesPrefixWith(trunk, 10));
  EXPECT_FALSE(branch.SharesPrefixWith(trunk, 11));
}

TEST(PathTest, BranchingAPromotedPathDropsLaterSegments) {
  const Path promoted = Path{7, {{0, 100}}}.BranchAt(10, 555);
  const Path deeper = promoted.BranchAt(20, 9);
  EXPECT_EQ(deeper, (Path{7, {{0, 100}, {10, 555}, {20, 9}}}));
  const Path earlier = deeper.BranchAt(5, 1);
  EXPECT_EQ(earlier, (Path{7, {{0, 100}, {5, 1}}}));
}

TEST(PathTest, ValidationNamesTheField) {
  EXPECT_TRUE(ValidatePath({1, {{0, 1}, {5, 2}}}, 50, "p").ok());
  const struct {
    Path path;
    const char* field;
  } bad[] = {
      {{1, {}}, "p.segments"},
      {{1, {{3, 1}}}, "p.segments[0].from_step"},
      {{1, {{0, 1}, {5, 2}, {5, 3}}}, "p.segments[2].from_step"},
      {{1, {{0, 1}, {9, 2}, {5, 3}}}, "p.segments[2].from_step"},
      {{1, {{0, 1}, {50, 2}}}, "p.segments[1].from_step"},
  };
  for (const auto& c : bad) {
    const absl::Status s = ValidatePath(c.path, 50, "p");
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.path.DebugString();
    EXPECT_NE(s.message().find(c.field), absl::string_view::npos) << s.message();
  }
  // The steps by no field's name: the orchestrator's is "steps", the
  // denoiser's "sampler.steps".
  EXPECT_EQ(ValidatePath({1, {{0, 1}, {50, 2}}}, 50, "trunk").message(),
            "trunk.segments[1].from_step must be below the steps (50), got 50");
}

SegmentConditioning Prompt(const std::string& prompt) { return {prompt, "", -1}; }

TEST(PathTest, ASegmentsConditioningHoldsUntilTheNextOneSetsAnother) {
  const Path trunk{7, {{0, 100}}};
  const Path switched = trunk.BranchAt(10, 100, Prompt("red apple"));
  EXPECT_EQ(switched.ConditioningAt(9), nullptr);  // the request's
  ASSERT_NE(switched.ConditioningAt(10), nullptr);
  EXPECT_EQ(switched.ConditioningAt(40)->prompt, "red apple");
  // Branching later keeps the switch below; a segment without conditioning
  // inherits it.
  const Path later = switched.BranchAt(20, 555);
  EXPECT_EQ(later.ConditioningAt(30)->prompt, "red apple");
  EXPECT_EQ(later.NoiseSeedAt(25), 555u);
}

TEST(PathTest, APromptSwitchIsPartOfThePrefixFromItsStep) {
  const Path trunk{7, {{0, 100}}};
  const Path switched = trunk.BranchAt(10, 100, Prompt("red apple"));
  // Same noise everywhere, and the same conditioning below step 10 only.
  EXPECT_TRUE(switched.SharesPrefixWith(trunk, 10));
  EXPECT_FALSE(switched.SharesPrefixWith(trunk, 11));
  EXPECT_NE(switched, trunk.BranchAt(10, 100));
  EXPECT_NE(switched, trunk.BranchAt(10, 100, Prompt("green apple")));
  EXPECT_EQ(switched.SegmentsBelow(11).size(), 2u);
}

TEST(PathTest, CanonicalDropsConditioningThatChangesNothing) {
  const SegmentConditioning request = Prompt("grinning face");
  const Path same = Path{7, {{0, 100}}}.BranchAt(10, 555, request);
  EXPECT_EQ(same.Canonical(request), (Path{7, {{0, 100}}}.BranchAt(10, 555)));
  // A switch back to the request's prompt after a real switch stays.
  Path there_and_back = Path{7, {{0, 100}}}.BranchAt(10, 555, Prompt("apple"));
  there_and_back = there_and_back.BranchAt(20, 556, request);
  const Path canonical = there_and_back.Canonical(request);
  ASSERT_TRUE(canonical.segments[1].conditioning.has_value());
  ASSERT_TRUE(canonical.segments[2].conditioning.has_value());
  EXPECT_EQ(canonical.ConditioningAt(25)->prompt, "grinning face");
  // Twice the same switch: the second is redundant.
  Path twice = Path{7, {{0, 100}}}.BranchAt(10, 555, Prompt("apple"));
  twice = twice.BranchAt(20, 556, Prompt("apple"));
  EXPECT_FALSE(twice.Canonical(request).segments[2].conditioning.has_value());
}

// With the trunk's noise, a switch to the prompt already in force leaves
// the trunk itself, which must have the trunk's name (and cache entries).
TEST(PathTest, CanonicalMergesASegmentThatChangesNothing) {
  const SegmentConditioning request = Prompt("grinning face");
  const Path trunk = Path{7, {{0, 100}}};
  EXPECT_EQ(trunk.SwitchedAt(10, request).Canonical(request), trunk);
  const Path promoted = trunk.BranchAt(20, 555);
  EXPECT_EQ(promoted.SwitchedAt(10, request).Canonical(request), promoted);
  EXPECT_EQ(promoted.SwitchedAt(20, request).Canonical(request), promoted);
  // A real switch keeps its segment, and a later one back to the request's
  // prompt keeps its own.
  const Path switched = trunk.SwitchedAt(10, Prompt("apple"));
  EXPECT_EQ(switched.Canonical(request).segments.size(), 2u);
  const Path back = switched.SwitchedAt(30, request).Canonical(request);
  ASSERT_EQ(back.segments.size(), 3u);
  EXPECT_EQ(back.ConditioningAt(35)->prompt, "grinning face");
  // A new seed is a new segment even without a switch.
  EXPECT_EQ(trunk.BranchAt(10, 101).Canonical(request).segments.size(), 2u);
}

TEST(PathTest, SwitchedAtKeepsEveryNoiseSeed) {
  const Path promoted = Path{7, {{0, 100}}}.BranchAt(30, 555);
  const Path switched = promoted.SwitchedAt(10, Prompt("apple"));
  for (int step : {0, 9, 10, 29, 30, 49}) {
    EXPECT_EQ(switched.NoiseSeedAt(step), promoted.NoiseSeedAt(step)) << step;
  }
  EXPECT_EQ(switched.ConditioningAt(9), nullptr);
  EXPECT_EQ(switched.ConditioningAt(45)->prompt, "apple");
  EXPECT_EQ(promoted.SwitchedAt(30, Prompt("pear")).segments.size(), 2u);  // set on (30, 555)
}

// A branch of a trunk that switches its prompt keeps the trunk's switches,
// its own noise under them: it differs from the trunk by the noise alone.
// Its switches at and after the branch step used to be dropped, so rows at
// or before the trunk's switch drew the first prompt to the end.
TEST(PathTest, BranchAtKeepsTheTrunksPromptSwitches) {
  const Path trunk =
      Path{7, {{0, 100}}}.SwitchedAt(5, Prompt("apple")).SwitchedAt(9, Prompt("pear"));
  for (int step : {0, 5, 7}) {
    const Path branch = trunk.BranchAt(step, 555);
    for (int at = 0; at < 12; ++at) {
      const SegmentConditioning* want = trunk.ConditioningAt(at);
      const SegmentConditioning* got = branch.ConditioningAt(at);
      ASSERT_EQ(want == nullptr, got == nullptr) << step << " " << at;
      if (want) EXPECT_EQ(*got, *want) << step << " " << at;
      EXPECT_EQ(branch.NoiseSeedAt(at), at < step ? trunk.NoiseSeedAt(at) : 555u)
          << step << " " << at;
    }
    EXPECT_TRUE(branch.SharesPrefixWith(trunk, step));
  }
  // A switch of the branch's own holds to the end.
  const Path switched = trunk.BranchAt(3, 555, Prompt("fig"));
  EXPECT_EQ(switched.ConditioningAt(11)->prompt, "fig");
}

// A trunk that already switches later (a promoted switched cell): a switch
// before that holds to the end. It used to last only until the trunk's own
// switch, so a row "-> ghost after step 0" was ghost for steps 0-2 alone.
TEST(PathTest, SwitchedAtHoldsPastTheTrunksOwnLaterSwitch) {
  const Path trunk = Path{7, {{0, 100}}}.SwitchedAt(3, Prompt("apple"));
  const Path switched = trunk.SwitchedAt(0, Prompt("ghost"));
  for (int step : {0, 2, 3, 9}) {
    ASSERT_NE(switched.ConditioningAt(step), nullptr) << step;
    EXPECT_EQ(switched.ConditioningAt(step)->prompt, "ghost") << step;
    EXPECT_EQ(switched.NoiseSeedAt(step), trunk.NoiseSeedAt(step)) << step;
  }
  // The same switch after the trunk's own keeps the trunk's up to it.
  const Path later = trunk.SwitchedAt(6, Prompt("ghost"));
  EXPECT_EQ(later.ConditioningAt(4)->prompt, "apple");
  EXPECT_EQ(later.ConditioningAt(7)->prompt, "ghost");
}

}  // namespace
}  // namespace dgrid
