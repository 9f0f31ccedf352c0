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
}

}  // namespace
}  // namespace dgrid
