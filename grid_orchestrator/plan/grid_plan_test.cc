#include "grid_orchestrator/plan/grid_plan.h"

#include <cmath>
#include <functional>
#include <set>

#include "absl/strings/match.h"
#include "common/wire.h"
#include "gtest/gtest.h"

namespace dgrid {
namespace {

v1::ModelInfo Model() {
  v1::ModelInfo m;
  m.set_name("fashion-mnist");
  m.set_train_timesteps(1000);
  m.set_steps_offset(1);
  for (const char* p : {"t-shirt", "trouser", "sneaker"}) m.add_prompts(p);
  m.mutable_defaults()->set_steps(50);
  m.mutable_defaults()->set_eta(1);
  m.mutable_defaults()->set_guidance(2);
  m.mutable_defaults()->set_spacing(v1::SPACING_LEADING);
  return m;
}

TEST(GridPlanTest, ClassicPresetCopiesTheOriginalApp) {
  v1::GridRequest r;
  r.set_preset("classic");
  auto plan = PlanGrid(r, Model(), {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->rows.size(), 3u);
  EXPECT_EQ(plan->rows[0].timestep, 921);
  EXPECT_EQ(plan->rows[1].timestep, 821);
  EXPECT_EQ(plan->rows[2].timestep, 701);
  // Branches run only the steps below their row: 46, 41 and 35 steps.
  EXPECT_EQ(plan->steps - plan->rows[0].branch_step, 46);
  EXPECT_EQ(plan->steps - plan->rows[1].branch_step, 41);
  EXPECT_EQ(plan->steps - plan->rows[2].branch_step, 35);
  EXPECT_EQ(plan->model_evals, 50 + 4 * (46 + 41 + 35));
  EXPECT_EQ(plan->model_evals, 538);
  EXPECT_EQ(plan->from_scratch_evals, 650);
}

TEST(GridPlanTest, DefaultPresetSpansTheTrajectory) {
  auto plan = PlanGrid(v1::GridRequest(), Model(), {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  std::vector<int> ks;
  for (const auto& row : plan->rows) ks.push_back(row.branch_step);
  EXPECT_EQ(ks, (std::vector<int>{0, 5, 10, 20, 30, 40}));
  EXPECT_EQ(plan->branches, 4);
  EXPECT_EQ(plan->rows[0].timestep, 1000);  // branches share only x_T
  EXPECT_EQ(plan->model_evals, 50 + 4 * (50 + 45 + 40 + 30 + 20 + 10));
  EXPECT_EQ(plan->from_scratch_evals, 25 * 50);
  EXPECT_FLOAT_EQ(plan->guidance, 2.0f);  // the model's default
  // The trunk streams every branch step (0: x_T) plus checkpoints.
  EXPECT_EQ(plan->trunk_captures, (std::vector<int>{0, 5, 10, 20, 30, 40}));
}

TEST(GridPlanTest, SizeConditioningIsTheRequestsWithTheModelsDefaults) {
  v1::GridRequest r;
  r.mutable_size()->set_original_height(512);
  r.mutable_size()->set_crop_left(64);
  // A model without size ids refuses it, naming the field.
  auto refused = PlanGrid(r, Model(), {});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(refused.status().message(), "size: fashion-mnist"))
      << refused.status();
  EXPECT_TRUE(PlanGrid(v1::GridRequest(), Model(), {})->size_ids == false);
  // A size of zeros is the defaults: any model takes it, as the denoiser
  // does (the Python client's crop=(0, 0) was refused).
  v1::GridRequest zeros;
  zeros.mutable_size();
  auto defaults = PlanGrid(zeros, Model(), {});
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_FALSE(defaults->size_ids);

  v1::ModelInfo xl = Model();
  xl.mutable_default_size()->set_original_height(1024);
  xl.mutable_default_size()->set_original_width(1024);
  xl.mutable_default_size()->set_target_height(1024);
  xl.mutable_default_size()->set_target_width(1024);
  auto plan = PlanGrid(r, xl, {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_TRUE(plan->size_ids);
  EXPECT_TRUE((plan->size == SizeConditioning{512, 1024, 0, 64, 1024, 1024}));
  v1::GridPlan wire;
  PlanToProto(*plan, &wire);
  EXPECT_EQ(wire.size().original_width(), 1024);
  EXPECT_EQ(wire.size().crop_left(), 64);
  // Unset sizes are the defaults, so an explicit default is the same plan.
  auto implicit = PlanGrid(v1::GridRequest(), xl, {});
  ASSERT_TRUE(implicit.ok());
  EXPECT_TRUE((implicit->size == SizeConditioning{1024, 1024, 0, 0, 1024, 1024}));
  r.mutable_size()->set_target_width(-1);
  auto negative = PlanGrid(r, xl, {});
  EXPECT_EQ(negative.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(negative.status().message(), "size.target_width"))
      << negative.status();
}

TEST(GridPlanTest, TheSamplerIsTheRequestsElseThePresets) {
  auto ddim = PlanGrid(v1::GridRequest(), Model(), {});
  ASSERT_TRUE(ddim.ok());
  EXPECT_EQ(ddim->sampler, Sampler::kDdim);
  v1::GridPlan wire;
  PlanToProto(*ddim, &wire);
  EXPECT_EQ(wire.sampler().sampler(), v1::SAMPLER_DDIM);

  v1::GridRequest r;
  r.set_preset("euler_a");
  auto euler = PlanGrid(r, Model(), {});
  ASSERT_TRUE(euler.ok()) << euler.status();
  EXPECT_EQ(euler->sampler, Sampler::kEulerAncestral);
  EXPECT_EQ(euler->rows.size(), ddim->rows.size());
  PlanToProto(*euler, &wire);
  EXPECT_EQ(wire.sampler().sampler(), v1::SAMPLER_EULER_ANCESTRAL);
  r.set_sampler(v1::SAMPLER_DDIM);
  EXPECT_EQ(PlanGrid(r, Model(), {})->sampler, Sampler::kDdim);

  // Turbo: 4 steps, a row at each but the last, which adds no noise.
  v1::GridRequest turbo;
  turbo.set_preset("turbo");
  auto t = PlanGrid(turbo, Model(), {});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->steps, 4);
  ASSERT_EQ(t->rows.size(), 3u);
  EXPECT_EQ(t->rows.back().branch_step, 2);
  EXPECT_EQ(t->sampler, Sampler::kEulerAncestral);

  v1::GridRequest bad;
  bad.set_sampler(static_cast<v1::Sampler>(9));
  auto refused = PlanGrid(bad, Model(), {});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(refused.status().message(),
            "sampler: unknown value 9; known: SAMPLER_DDIM, SAMPLER_EULER_ANCESTRAL");
}

TEST(GridPlanTest, CellsBranchFromTheTrunkAtTheirRow) {
  v1::GridRequest r;
  r.set_seed(7);
  r.set_prompt("sneaker");
  auto plan = PlanGrid(r, Model(), {});
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->class_index, 2);
  EXPECT_EQ(plan->trunk.init_seed, 7u);
  std::set<uint64_t> seeds;
  for (const auto& row : plan->rows) {
    for (const Path& cell : row.cells) {
      ASSERT_TRUE(ValidatePath(cell, plan->steps, "cell").ok());
      EXPECT_TRUE(cell.SharesPrefixWith(plan->trunk, row.branch_step));
      EXPECT_NE(cell.NoiseSeedAt(row.branch_step), plan->trunk.NoiseSeedAt(row.branch_step));
      seeds.insert(cell.NoiseSeedAt(row.branch_step));
    }
  }
  EXPECT_EQ(seeds.size(), 24u);  // every cell has its own noise
  // Same request, same plan; another seed, another trunk.
  auto again = PlanGrid(r, Model(), {});
  EXPECT_EQ(again->rows[3].cells[2], plan->rows[3].cells[2]);
  r.set_seed(8);
  EXPECT_NE(PlanGrid(r, Model(), {})->trunk, plan->trunk);
}

TEST(GridPlanTest, PromotedCellKeepsTheRowsAboveIt) {
  v1::GridRequest r;
  r.set_seed(7);
  auto grid = PlanGrid(r, Model(), {});
  ASSERT_TRUE(grid.ok());
  // Promote row 3 (branch step 20), column 1.
  const Path promoted = grid->rows[3].cells[1];
  v1::GridRequest next = r;
  PathToProto(promoted, next.mutable_trunk());
  auto regrown = PlanGrid(next, Model(), {});
  ASSERT_TRUE(regrown.ok()) << regrown.status();
  EXPECT_EQ(regrown->trunk, promoted);
  for (int row = 0; row <= 3; ++row) {
    // Rows at or above the promoted cell's branch step are the same cells...
    EXPECT_EQ(regrown->rows[row].cells, grid->rows[row].cells) << row;
  }
  for (int row = 4; row < 6; ++row) {
    // ...rows below branch off the new trunk.
    for (const Path& cell : regrown->rows[row].cells) {
      EXPECT_TRUE(cell.SharesPrefixWith(promoted, regrown->rows[row].branch_step));
      EXPECT_FALSE(cell.SharesPrefixWith(grid->trunk, regrown->rows[row].branch_step));
    }
  }
  // Deeper exploration appends segments.
  EXPECT_EQ(regrown->rows[5].cells[0].segments.size(), 3u);
}

TEST(GridPlanTest, CostArithmeticForCustomRows) {
  v1::GridRequest r;
  r.mutable_steps()->set_value(20);
  r.mutable_branches()->set_value(3);
  r.add_branch_steps(0);
  r.add_branch_steps(19);
  auto plan = PlanGrid(r, Model(), {});
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->model_evals, 20 + 3 * 20 + 3 * 1);
  EXPECT_EQ(plan->from_scratch_evals, 7 * 20);
  // Preset rows scale with the step count.
  v1::GridRequest scaled;
  scaled.mutable_steps()->set_value(10);
  std::vector<int> ks;
  auto scaled_plan = PlanGrid(scaled, Model(), {});
  ASSERT_TRUE(scaled_plan.ok());
  for (const auto& row : scaled_plan->rows) ks.push_back(row.branch_step);
  EXPECT_EQ(ks, (std::vector<int>{0, 1, 2, 4, 6, 8}));
}

// A preset's rows stop before Euler ancestral's last step, where branches
// would be the trunk: a short Turbo grid runs (it was refused for a row the
// user never gave).
TEST(GridPlanTest, PresetRowsStopBeforeEulerAncestralsLastStep) {
  auto rows = [](const char* preset, int steps, v1::Sampler sampler = v1::SAMPLER_UNSPECIFIED) {
    v1::GridRequest r;
    r.set_preset(preset);
    r.mutable_steps()->set_value(steps);
    r.set_sampler(sampler);
    auto plan = PlanGrid(r, Model(), {});
    std::vector<int> out;
    if (!plan.ok()) return std::vector<int>{-1};
    for (const PlannedRow& row : plan->rows) out.push_back(row.branch_step);
    return out;
  };
  EXPECT_EQ(rows("turbo", 4), (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(rows("turbo", 3), (std::vector<int>{0, 1}));
  EXPECT_EQ(rows("turbo", 2), (std::vector<int>{0}));
  EXPECT_EQ(rows("default", 5, v1::SAMPLER_EULER_ANCESTRAL), (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(rows("default", 5), (std::vector<int>{0, 1, 2, 3, 4}));  // DDIM adds noise there
  EXPECT_EQ(rows("classic", 3, v1::SAMPLER_EULER_ANCESTRAL).back(), 1);
  // DDIM whose last step lands on alpha-bar 1 adds no noise there either.
  v1::ModelInfo to_one = Model();
  to_one.set_set_alpha_to_one(true);
  v1::GridRequest ddim;
  ddim.mutable_steps()->set_value(5);
  auto plan = PlanGrid(ddim, to_one, {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->rows.back().branch_step, 3);
  ddim.add_branch_steps(4);
  EXPECT_EQ(PlanGrid(ddim, to_one, {}).status().message(),
            "branch_steps[0]: DDIM on this model's schedule (set_alpha_to_one) adds no noise at "
            "its last step (4), so branches from there would be the trunk; branch earlier");
  // Trailing spacing at 7 steps ends at 142, whose step goes to alpha-bar[0],
  // not to 1: it adds noise, and its row runs (it was refused).
  v1::ModelInfo trailing = to_one;
  trailing.mutable_defaults()->set_spacing(v1::SPACING_TRAILING);
  v1::GridRequest seven;
  seven.mutable_steps()->set_value(7);
  EXPECT_EQ(PlanGrid(seven, trailing, {})->rows.back().branch_step, 6);
  seven.add_branch_steps(6);
  EXPECT_TRUE(PlanGrid(seven, trailing, {}).ok()) << PlanGrid(seven, trailing, {}).status();
  // Leading spacing without steps_offset ends at timestep 0, whose step to
  // alpha-bar[0] adds none: no row there (its branches were the trunk's).
  v1::ModelInfo from_zero = Model();
  from_zero.set_steps_offset(0);
  EXPECT_EQ(PlanGrid(ddim, from_zero, {}).status().message(),
            "branch_steps[0]: DDIM from timestep 0 adds no noise at its last step (4), so "
            "branches from there would be the trunk; branch earlier");
  ddim.clear_branch_steps();
  EXPECT_EQ(PlanGrid(ddim, from_zero, {})->rows.back().branch_step, 3);
  v1::GridRequest one;
  one.set_preset("turbo");
  one.mutable_steps()->set_value(1);
  EXPECT_EQ(PlanGrid(one, Model(), {}).status().message().substr(0, 47),
            "steps: Euler ancestral adds no noise at its las");
}

// Linspace: rows labelled with numpy's rounded timesteps; Euler ancestral
// runs their fractions, which a model taking whole timesteps cannot read.
TEST(GridPlanTest, LinspaceEulerAncestralNeedsAModelThatTakesFloatTimesteps) {
  v1::GridRequest r;
  r.set_spacing(v1::SPACING_LINSPACE);
  auto ddim = PlanGrid(r, Model(), {});
  ASSERT_TRUE(ddim.ok()) << ddim.status();
  EXPECT_EQ(ddim->rows[1].timestep, 917);  // after step 4: 45 * 999 / 49 = 917.4
  EXPECT_EQ(ddim->timesteps.back(), 0);
  r.set_preset("euler_a");
  EXPECT_EQ(PlanGrid(r, Model(), {}).status().message(),
            "spacing: Euler ancestral with linspace spacing runs fractional timesteps at 50 "
            "steps, and fashion-mnist takes whole ones (its bundle's timestep_dtype is "
            "\"long\"); give leading or trailing spacing, DDIM, or a step count whose linspace "
            "timesteps are whole (1, 2, 4, 10, 28, 38, 112, 334, 1000)");
  v1::ModelInfo floats = Model();
  floats.set_float_timesteps(true);
  EXPECT_TRUE(PlanGrid(r, floats, {}).ok()) << PlanGrid(r, floats, {}).status();
  r.mutable_steps()->set_value(10);  // 999 / 9 = 111: every timestep whole
  EXPECT_TRUE(PlanGrid(r, Model(), {}).ok()) << PlanGrid(r, Model(), {}).status();
}

// A default spacing this orchestrator does not know (a newer denoiser's) is
// not the client's fault (UNIMPLEMENTED, counted failed), and a request that
// names its spacing runs.
TEST(GridPlanTest, AnUnknownDefaultSpacingIsTheModelsAndARequestsSpacingRuns) {
  v1::ModelInfo newer = Model();
  newer.mutable_defaults()->set_spacing(static_cast<v1::Spacing>(9));
  v1::GridRequest r;
  const absl::Status refused = PlanGrid(r, newer, {}).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(refused.message(),
            "fashion-mnist's default spacing (9) is unknown to this orchestrator; a request that "
            "names its spacing runs");
  r.set_spacing(v1::SPACING_TRAILING);
  EXPECT_TRUE(PlanGrid(r, newer, {}).ok()) << PlanGrid(r, newer, {}).status();
  r.set_spacing(static_cast<v1::Spacing>(9));
  EXPECT_EQ(PlanGrid(r, newer, {}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GridPlanTest, NoNoiseIsAllowedWhereAPromptMakesTheBranchesDiffer) {
  v1::GridRequest r;
  r.mutable_eta()->set_value(0);
  r.set_prompt("t-shirt");
  r.set_switch_prompt("sneaker");
  EXPECT_TRUE(PlanGrid(r, Model(), {}).ok()) << PlanGrid(r, Model(), {}).status();
  EXPECT_EQ(PlanGrid(r, Model(), {})->branches, 1);  // the one trajectory a row has
  // Its branches are one trajectory: more than one is refused, as with the
  // trunk's noise (they ran, paid for, with every row's divergence 0).
  r.mutable_branches()->set_value(2);
  EXPECT_EQ(PlanGrid(r, Model(), {}).status().message(),
            "branches: eta 0 adds no noise, so every branch of a row is the same trajectory; "
            "ask for 1, got 2");
  r.clear_branches();
  r.clear_eta();
  r.set_sampler(v1::SAMPLER_EULER_ANCESTRAL);
  r.add_branch_steps(49);
  EXPECT_TRUE(PlanGrid(r, Model(), {}).ok()) << PlanGrid(r, Model(), {}).status();
}

TEST(GridPlanTest, ValidationNamesTheField) {
  const struct {
    std::function<void(v1::GridRequest&)> mutate;
    const char* field;
  } cases[] = {
      {[](auto& r) { r.set_preset("fancy"); }, "preset"},
      {[](auto& r) { r.set_prompt("zebra"); }, "prompt"},
      {[](auto& r) { r.mutable_steps()->set_value(0); }, "steps"},
      {[](auto& r) { r.mutable_steps()->set_value(-4); }, "steps"},
      {[](auto& r) { r.mutable_steps()->set_value(100000); }, "steps"},
      {[](auto& r) { r.mutable_eta()->set_value(2); }, "eta"},
      {[](auto& r) { r.mutable_guidance()->set_value(-1); }, "guidance"},
      {[](auto& r) { r.mutable_branches()->set_value(0); }, "branches"},
      {[](auto& r) { r.mutable_branches()->set_value(1000); }, "branches"},
      {[](auto& r) { r.add_branch_steps(10); r.add_branch_steps(5); }, "branch_steps[1]"},
      {[](auto& r) { r.add_branch_steps(3); r.add_branch_steps(3); }, "branch_steps[1]"},
      {[](auto& r) { r.add_branch_steps(-1); }, "branch_steps[0]"},
      {[](auto& r) { r.add_branch_steps(50); }, "branch_steps[0]"},
      {[](auto& r) {
         for (int k = 0; k < 17; ++k) r.add_branch_steps(k);
       },
       "branch_steps"},
      {[](auto& r) {
         r.mutable_steps()->set_value(999);
         r.mutable_branches()->set_value(16);
         for (int k = 0; k < 16; ++k) r.add_branch_steps(k);
       },
       "exceeds the limit"},
      // steps_offset 1: a 1000th leading step would run timestep 1000.
      {[](auto& r) { r.mutable_steps()->set_value(1000); },
       "steps: 1000 leading steps with steps_offset 1"},
      {[](auto& r) { r.mutable_trunk()->set_init_seed(3); }, "trunk.segments"},
      // No step adds noise: every branch would be its trunk.
      {[](auto& r) { r.mutable_eta()->set_value(0); }, "eta: 0 adds no noise at any step"},
      {[](auto& r) {
         r.set_sampler(v1::SAMPLER_EULER_ANCESTRAL);
         r.add_branch_steps(10);
         r.add_branch_steps(49);
       },
       "branch_steps[1]: Euler ancestral adds no noise at its last step (49)"},
      {[](auto& r) {
         auto* t = r.mutable_trunk();
         t->add_segments()->set_from_step(0);
         t->add_segments()->set_from_step(0);
       },
       "trunk.segments[1].from_step"},
  };
  for (const auto& c : cases) {
    v1::GridRequest r;
    c.mutate(r);
    auto plan = PlanGrid(r, Model(), {});
    ASSERT_FALSE(plan.ok()) << c.field;
    EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(plan.status().message().find(c.field), absl::string_view::npos)
        << plan.status().message();
  }
}

// The value is echoed as the client sent it: 1.0000001 read "got 1", a
// value that looks in range.
TEST(GridPlanTest, EtaAndGuidanceAreEchoedAsSent) {
  const struct {
    const char* field;
    float value;
    const char* message;
  } cases[] = {
      {"eta", 1.0000001f, "eta must be in [0, 1], got 1.0000001"},
      {"guidance", 100.00001f, "guidance must be in [0, 100], got 100.00001"},
      {"guidance", -1e-7f, "guidance must be in [0, 100], got -1e-07"},
      {"guidance", INFINITY, "guidance must be in [0, 100], got inf"},
  };
  for (const auto& c : cases) {
    v1::GridRequest r;
    (std::string(c.field) == "eta" ? r.mutable_eta() : r.mutable_guidance())->set_value(c.value);
    auto plan = PlanGrid(r, Model(), {});
    ASSERT_FALSE(plan.ok()) << c.message;
    EXPECT_EQ(std::string(plan.status().message()), c.message);
  }
  // -0 is 0: one setting, and one cache key.
  v1::GridRequest r;
  r.mutable_guidance()->set_value(-0.0);
  auto plan = PlanGrid(r, Model(), {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_FALSE(std::signbit(plan->guidance));
}

// The count names switch_prompt only where there is one.
TEST(GridPlanTest, TooManySwitchesSayWhereTheyCameFrom) {
  v1::GridRequest r;
  v1::Path* trunk = r.mutable_trunk();
  trunk->set_init_seed(3);
  for (int k = 0; k < 18; ++k) {
    v1::Segment* s = trunk->add_segments();
    s->set_from_step(k);
    if (k > 0) s->mutable_conditioning()->set_class_index(k % 2);  // each one a switch
  }
  auto plan = PlanGrid(r, Model(), {});
  ASSERT_FALSE(plan.ok());
  EXPECT_TRUE(absl::EndsWith(plan.status().message(),
                             "this trunk's cells would 17 times (the trunk's switches)"))
      << plan.status();
  r.set_switch_prompt("sneaker");
  plan = PlanGrid(r, Model(), {});
  ASSERT_FALSE(plan.ok());
  EXPECT_TRUE(absl::EndsWith(plan.status().message(),
                             "would 18 times (the trunk's switches, and switch_prompt's)"))
      << plan.status();
}

// Issue 25: prompt-switch grids.
TEST(GridPlanTest, ASwitchPromptConditionsEachRowsBranchesFromItsStep) {
  v1::GridRequest r;
  r.set_seed(7);
  r.set_prompt("sneaker");
  r.set_switch_prompt("trouser");
  auto plan = PlanGrid(r, Model(), {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  for (const PlannedRow& row : plan->rows) {
    for (const Path& cell : row.cells) {
      EXPECT_EQ(cell.ConditioningAt(row.branch_step - 1), nullptr);
      ASSERT_NE(cell.ConditioningAt(row.branch_step), nullptr);
      EXPECT_EQ(cell.ConditioningAt(row.branch_step)->class_index, 1);  // "trouser"
      // New noise: its own seed from the branch step on, as without a switch.
      EXPECT_NE(cell.NoiseSeedAt(row.branch_step), plan->trunk.NoiseSeedAt(row.branch_step));
    }
  }
  v1::GridPlan wire;
  PlanToProto(*plan, &wire);
  EXPECT_EQ(wire.switch_prompt(), "trouser");
  EXPECT_FALSE(wire.switch_unseen());
  EXPECT_EQ(wire.branch_noise(), v1::BRANCH_NOISE_NEW);
}

// A grid whose every cell would be its trunk is refused, run and paid for
// by no one, whatever switch it carries that makes no branch differ: an
// unseen switch prompt, or a promoted trunk's own switch (a branch keeps
// it). Before, both ran: every cell the trunk, every row's divergence 0.
TEST(GridPlanTest, ASwitchThatChangesNoBranchIsPlannedAsNone) {
  v1::GridRequest plain;
  plain.set_seed(7);
  plain.set_prompt("t-shirt");
  plain.mutable_eta()->set_value(0);
  const absl::Status refused = PlanGrid(plain, Model(), {}).status();
  ASSERT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);

  v1::GridRequest noisy = plain;
  noisy.clear_eta();
  auto grid = PlanGrid(noisy, Model(), {});
  ASSERT_TRUE(grid.ok()) << grid.status();
  v1::GridRequest promoted = plain;  // a cell switched to "sneaker" after step 10
  PathToProto(grid->trunk.SwitchedAt(10, SegmentConditioning{"", "", 2}), promoted.mutable_trunk());
  EXPECT_EQ(PlanGrid(promoted, Model(), {}).status(), refused);
  promoted.clear_eta();
  EXPECT_TRUE(PlanGrid(promoted, Model(), {}).ok());

  v1::GridRequest unseen = plain;
  unseen.set_switch_prompt("t-shirt");
  const absl::Status same = PlanGrid(unseen, Model(), {}).status();
  EXPECT_EQ(same.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(same.message(), "eta: 0 adds no noise")) << same;
  EXPECT_TRUE(absl::StrContains(same.message(), "changes nothing this model reads")) << same;
  EXPECT_TRUE(absl::EndsWith(same.message(), "or a switch_prompt the model reads")) << same;
  // Found by the caller (GridService, from the tokens): the same.
  unseen.set_switch_prompt("sneaker");
  EXPECT_TRUE(PlanGrid(unseen, Model(), {}).ok());
  EXPECT_EQ(PlanGrid(unseen, Model(), {}, /*switch_unseen=*/true).status(), same);

  // A last step without noise: refused as the plain request is.
  v1::GridRequest last;
  last.set_prompt("t-shirt");
  last.set_sampler(v1::SAMPLER_EULER_ANCESTRAL);
  last.add_branch_steps(49);
  ASSERT_FALSE(PlanGrid(last, Model(), {}).ok());
  last.set_switch_prompt("t-shirt");
  EXPECT_FALSE(PlanGrid(last, Model(), {}).ok());
  // A preset's rows stop before it, as the plain plan's do.
  v1::GridRequest turbo;
  turbo.set_prompt("t-shirt");
  turbo.set_preset("turbo");
  turbo.mutable_steps()->set_value(3);
  auto turbo_plain = PlanGrid(turbo, Model(), {});
  turbo.set_switch_prompt("t-shirt");
  auto turbo_unseen = PlanGrid(turbo, Model(), {});
  ASSERT_TRUE(turbo_plain.ok() && turbo_unseen.ok());
  ASSERT_EQ(turbo_plain->rows.size(), turbo_unseen->rows.size());
  for (size_t i = 0; i < turbo_plain->rows.size(); ++i) {
    EXPECT_EQ(turbo_plain->rows[i].cells, turbo_unseen->rows[i].cells) << i;
  }
}

// A switch back to the request's prompt on a promoted trunk that switched
// to another is seen: the rows past the trunk's switch switch back. It was
// planned as none (read against the request's prompt alone), and an eta-0
// grid refused as one whose branches would all be the trunk.
TEST(GridPlanTest, ASwitchBackFromAPromotedTrunksOwnSwitchIsSeen) {
  v1::GridRequest noisy;
  noisy.set_seed(7);
  noisy.set_prompt("t-shirt");
  auto grid = PlanGrid(noisy, Model(), {});
  ASSERT_TRUE(grid.ok()) << grid.status();
  v1::GridRequest back = noisy;  // a cell switched to "sneaker" after step 10
  PathToProto(grid->trunk.SwitchedAt(10, SegmentConditioning{"", "", 2}), back.mutable_trunk());
  back.mutable_eta()->set_value(0);
  back.set_switch_prompt("t-shirt");
  back.mutable_branches()->set_value(1);
  for (int k : {5, 20, 30}) back.add_branch_steps(k);
  for (const bool caller_found_unseen : {false, true}) {
    auto planned = PlanGrid(back, Model(), {}, caller_found_unseen);
    ASSERT_TRUE(planned.ok()) << planned.status();
    EXPECT_FALSE(planned->switch_unseen);
    ASSERT_EQ(planned->rows.size(), 3u);
    for (const PlannedRow& row : planned->rows) {
      ASSERT_EQ(row.cells.size(), 1u);
      EXPECT_NE(row.cells[0], planned->trunk) << row.branch_step;
      EXPECT_TRUE(row.switches) << row.branch_step;
    }
  }
  // A switch to the trunk's own prompt: rows past its switch do not switch
  // (the grid figure labelled them "→ sneaker after step k").
  back.set_switch_prompt("sneaker");
  back.clear_eta();
  auto same = PlanGrid(back, Model(), {});
  ASSERT_TRUE(same.ok()) << same.status();
  ASSERT_EQ(same->rows.size(), 3u);
  EXPECT_TRUE(same->rows[0].switches);
  EXPECT_FALSE(same->rows[1].switches);
  EXPECT_FALSE(same->rows[2].switches);
  // On the wire, for the clients that label rows (the explorer's rule was
  // its own).
  v1::GridPlan wire;
  PlanToProto(*same, &wire);
  EXPECT_EQ(std::vector<bool>(wire.switching_rows().begin(), wire.switching_rows().end()),
            (std::vector<bool>{true, false, false}));
  // At eta 0 such a row's branches would be the trunk, run again: refused,
  // naming the row (they were run, their images the trunk's).
  back.mutable_eta()->set_value(0);
  const absl::Status trunk_rows = PlanGrid(back, Model(), {}).status();
  EXPECT_TRUE(absl::StartsWith(trunk_rows.message(), "branch_steps[1]: the promoted trunk is "
                                                     "conditioned on the switch prompt from step "
                                                     "20 on already"))
      << trunk_rows;
  back.clear_branch_steps();
  // A preset's such rows are left out, as its rows at a noiseless last step
  // are (they ran, each cell the trunk).
  auto preset = PlanGrid(back, Model(), {});
  ASSERT_TRUE(preset.ok()) << preset.status();
  std::vector<int> steps;
  for (const PlannedRow& row : preset->rows) steps.push_back(row.branch_step);
  EXPECT_EQ(steps, (std::vector<int>{0, 5}));
  EXPECT_EQ(preset->model_evals, 50 + 50 + 45);
  back.add_branch_steps(5);
  EXPECT_TRUE(PlanGrid(back, Model(), {}).ok());
  for (int k : {20, 30}) back.add_branch_steps(k);
  back.set_switch_prompt("t-shirt");
  // Without the trunk's own switch it is none, and refused at eta 0.
  back.clear_trunk();
  const absl::Status refused = PlanGrid(back, Model(), {}).status();
  EXPECT_TRUE(absl::StrContains(refused.message(), "changes nothing this model reads")) << refused;
}

TEST(GridPlanTest, ASwitchToTheSamePromptIsThePlainPlan) {
  v1::GridRequest r;
  r.set_seed(7);
  r.set_prompt("sneaker");
  auto plain = PlanGrid(r, Model(), {});
  r.set_switch_prompt("sneaker");
  auto same = PlanGrid(r, Model(), {});
  ASSERT_TRUE(plain.ok() && same.ok());
  for (size_t i = 0; i < plain->rows.size(); ++i) {
    EXPECT_EQ(plain->rows[i].cells, same->rows[i].cells) << "row " << i;
  }
  // The plan says so, for the clients' row labels; the plain plan has none.
  EXPECT_TRUE(same->switch_unseen);
  EXPECT_FALSE(plain->switch_unseen);
  v1::GridPlan wire;
  PlanToProto(*same, &wire);
  EXPECT_TRUE(wire.switch_unseen());
  // And a switch the tokens read alike (another case) is planned as none.
  r.set_switch_prompt("trouser");
  auto tokens_alike = PlanGrid(r, Model(), {});
  ASSERT_TRUE(tokens_alike.ok());
  EXPECT_FALSE(tokens_alike->switch_unseen);
  tokens_alike = PlanGrid(r, Model(), {}, /*switch_unseen=*/true);  // as GridService finds
  ASSERT_TRUE(tokens_alike.ok()) << tokens_alike.status();
  EXPECT_TRUE(tokens_alike->switch_unseen);
  EXPECT_EQ(tokens_alike->switch_prompt, "trouser");  // on record
  for (size_t i = 0; i < plain->rows.size(); ++i) {
    EXPECT_EQ(plain->rows[i].cells, tokens_alike->rows[i].cells) << "row " << i;
  }
}

// Guidance 1 runs the prompt's row alone, and 0 the negative prompt's row
// alone (the denoiser's PhaseFor): a switch of what that row does not read
// changes no value, and is planned as none, at no cost.
TEST(GridPlanTest, ASwitchOfWhatTheGuidanceDoesNotReadIsThePlainPlan) {
  v1::ModelInfo text = Model();
  text.set_conditioning("text");
  auto plan = [&](float guidance, const char* switch_prompt, const char* switch_negative,
                  const v1::ModelInfo& model) {
    v1::GridRequest r;
    r.set_seed(7);
    r.set_prompt(model.conditioning() == "text" ? "a cat" : "sneaker");
    if (model.conditioning() == "text") r.set_negative_prompt("blurry");
    r.mutable_guidance()->set_value(guidance);
    r.set_switch_prompt(switch_prompt);
    r.set_switch_negative_prompt(switch_negative);
    absl::StatusOr<GridPlanSpec> p = PlanGrid(r, model, {});
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? *p : GridPlanSpec();
  };
  auto is_plain = [&](const GridPlanSpec& p, float guidance, const v1::ModelInfo& model) {
    const GridPlanSpec plain = plan(guidance, "", "", model);
    bool same = p.model_evals == plain.model_evals && p.rows.size() == plain.rows.size();
    for (size_t i = 0; same && i < p.rows.size(); ++i) same = p.rows[i].cells == plain.rows[i].cells;
    // The plan says so exactly when it is the plain plan.
    EXPECT_EQ(p.switch_unseen, same) << "guidance " << guidance;
    return same;
  };
  // Only the negative prompt switches: unseen at guidance 1, seen elsewhere.
  EXPECT_TRUE(is_plain(plan(1, "a cat", "sharp", text), 1, text));
  EXPECT_FALSE(is_plain(plan(4, "a cat", "sharp", text), 4, text));
  EXPECT_FALSE(is_plain(plan(0, "a cat", "sharp", text), 0, text));
  // Only the prompt switches: unseen at guidance 0, seen elsewhere.
  EXPECT_TRUE(is_plain(plan(0, "a dog", "", text), 0, text));
  EXPECT_TRUE(is_plain(plan(0, "a dog", "blurry", text), 0, text));
  EXPECT_FALSE(is_plain(plan(1, "a dog", "", text), 1, text));
  EXPECT_FALSE(is_plain(plan(4, "a dog", "", text), 4, text));
  // A class model at guidance 0 reads no class at all.
  EXPECT_TRUE(is_plain(plan(0, "trouser", "", Model()), 0, Model()));
  EXPECT_FALSE(is_plain(plan(1, "trouser", "", Model()), 1, Model()));
  // The plan keeps the switch as asked, for the grid's record.
  EXPECT_EQ(plan(1, "a cat", "sharp", text).switch_negative_prompt, "sharp");
}

TEST(GridPlanTest, TrunkNoiseGivesOneColumnThatDiffersOnlyByThePrompt) {
  v1::GridRequest r;
  r.set_seed(7);
  r.set_prompt("sneaker");
  r.set_switch_prompt("trouser");
  r.set_branch_noise(v1::BRANCH_NOISE_TRUNK);
  auto plan = PlanGrid(r, Model(), {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->branches, 1);
  for (const PlannedRow& row : plan->rows) {
    ASSERT_EQ(row.cells.size(), 1u);
    for (int step : {0, row.branch_step, 49}) {
      EXPECT_EQ(row.cells[0].NoiseSeedAt(step), plan->trunk.NoiseSeedAt(step));
    }
    EXPECT_EQ(row.cells[0].ConditioningAt(row.branch_step)->class_index, 1);
  }
  // A switch to the prompt itself leaves every cell the trunk, by name too,
  // so that the cells meet the trunk's cache entries.
  r.set_switch_prompt("sneaker");
  auto same = PlanGrid(r, Model(), {});
  ASSERT_TRUE(same.ok()) << same.status();
  for (const PlannedRow& row : same->rows) EXPECT_EQ(row.cells[0], same->trunk) << row.branch_step;
  r.set_switch_prompt("trouser");
  // Refused, naming the field.
  r.mutable_branches()->set_value(3);
  EXPECT_NE(PlanGrid(r, Model(), {}).status().message().find("branches:"), std::string::npos);
  r.clear_branches();
  r.clear_switch_prompt();
  EXPECT_NE(PlanGrid(r, Model(), {}).status().message().find("branch_noise:"), std::string::npos);
}

TEST(GridPlanTest, BadSwitchesAreRefusedNamingTheField) {
  v1::GridRequest r;
  r.set_switch_prompt("a photo of a cat");  // free text to a class model
  EXPECT_EQ(PlanGrid(r, Model(), {}).status().message().substr(0, 14), "switch_prompt:");
  r.set_switch_prompt("trouser");
  r.set_switch_negative_prompt("blurry");
  EXPECT_EQ(PlanGrid(r, Model(), {}).status().message().substr(0, 23), "switch_negative_prompt:");
  r.clear_switch_negative_prompt();
  r.set_branch_noise(static_cast<v1::BranchNoise>(7));
  // The names the wire takes, JSON's too (it refuses "TRUNK").
  EXPECT_EQ(PlanGrid(r, Model(), {}).status().message(),
            "branch_noise: unknown value 7; known: BRANCH_NOISE_NEW, BRANCH_NOISE_TRUNK");
  r.set_branch_noise(v1::BRANCH_NOISE_NEW);
  r.set_switch_prompt(std::string(5000, 'x'));
  EXPECT_EQ(PlanGrid(r, Model(), {}).status().code(), absl::StatusCode::kInvalidArgument);
}

// A switch without its own negative prompt carries the grid's: its bytes
// count (they were left out, so cells carried 4 KiB more than the bound).
TEST(GridPlanTest, TheSwitchPromptsCellsCarryAreBoundedWithTheirNegativePrompt) {
  v1::ModelInfo text = Model();
  text.set_conditioning("text");
  v1::GridRequest r;
  r.set_prompt("a");
  r.set_negative_prompt(std::string(4000, 'n'));
  r.set_switch_prompt(std::string(4000, 's'));
  Path trunk{3, {{0, 9}}};
  trunk = trunk.BranchAt(5, 8, SegmentConditioning{std::string(4000, 'x'), std::string(4000, 'y'), -1});
  trunk = trunk.BranchAt(10, 7, SegmentConditioning{std::string(1000, 'z'), "", -1});
  PathToProto(trunk, r.mutable_trunk());
  auto plan = PlanGrid(r, text, {});
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().message(),
            "trunk.segments: the prompts a cell would switch to hold 17000 bytes, more than 16384");
  r.set_negative_prompt(std::string(600, 'n'));  // 13600 bytes
  EXPECT_TRUE(PlanGrid(r, text, {}).ok()) << PlanGrid(r, text, {}).status();
}

TEST(GridPlanTest, APromotedTrunksSwitchMustFitTheModel) {
  v1::GridRequest r;
  r.set_prompt("sneaker");
  Path trunk{3, {{0, 9}}};
  PathToProto(trunk.BranchAt(10, 9, SegmentConditioning{"a photo of a cat", "", -1}),
              r.mutable_trunk());
  EXPECT_EQ(PlanGrid(r, Model(), {}).status().message().substr(0, 38),
            "trunk.segments[1].conditioning.prompt:");
  PathToProto(trunk.BranchAt(10, 9, SegmentConditioning{"", "", 7}), r.mutable_trunk());
  EXPECT_EQ(PlanGrid(r, Model(), {}).status().message().substr(0, 42),
            "trunk.segments[1].conditioning.class_index");
  // -1 given on the wire is no class either; it ran unconditional.
  r.mutable_trunk()->mutable_segments(1)->mutable_conditioning()->set_class_index(-1);
  EXPECT_EQ(PlanGrid(r, Model(), {}).status().message(),
            "trunk.segments[1].conditioning.class_index must be in [0, 3), got -1");
  v1::ModelInfo text = Model();
  text.set_conditioning("text");
  EXPECT_EQ(PlanGrid(r, text, {}).status().message(),
            "trunk.segments[1].conditioning.class_index: fashion-mnist is a text model; give a "
            "prompt");
  // One that fits plans, canonical: a switch to the request's own class
  // with the same noise changes nothing, so the segment goes (since
  // Path::Canonical merges such segments; the old check read past the end).
  PathToProto(trunk.BranchAt(10, 9, SegmentConditioning{"", "", 2}), r.mutable_trunk());
  auto plan = PlanGrid(r, Model(), {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->trunk, trunk);
  // With other noise the segment stays, its conditioning gone.
  PathToProto(trunk.BranchAt(10, 8, SegmentConditioning{"", "", 2}), r.mutable_trunk());
  plan = PlanGrid(r, Model(), {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->trunk.segments.size(), 2u);
  EXPECT_FALSE(plan->trunk.segments[1].conditioning.has_value());

  // A class by name is the class by index: the same trunk, so that equal
  // trajectories share their name and cache entries (by name it kept a
  // no-op switch and ran its steps again).
  PathToProto(trunk.BranchAt(10, 8, SegmentConditioning{"trouser", "", -1}), r.mutable_trunk());
  auto by_name = PlanGrid(r, Model(), {});
  PathToProto(trunk.BranchAt(10, 8, SegmentConditioning{"", "", 1}), r.mutable_trunk());
  auto by_index = PlanGrid(r, Model(), {});
  ASSERT_TRUE(by_name.ok() && by_index.ok()) << by_name.status() << by_index.status();
  EXPECT_EQ(by_name->trunk, by_index->trunk);
  PathToProto(trunk.SwitchedAt(10, SegmentConditioning{"sneaker", "", -1}), r.mutable_trunk());
  EXPECT_EQ(PlanGrid(r, Model(), {})->trunk, trunk) << "a no-op switch by name is dropped";

  // A promoted switched trunk's rows switch as it does, whatever their step:
  // rows at or before its switch drew the request's class to the end.
  PathToProto(trunk.SwitchedAt(10, SegmentConditioning{"", "", 1}), r.mutable_trunk());
  auto switched = PlanGrid(r, Model(), {});
  ASSERT_TRUE(switched.ok()) << switched.status();
  for (const PlannedRow& row : switched->rows) {
    for (const Path& cell : row.cells) {
      for (int step : {0, 9, 10, 49}) {
        const SegmentConditioning* want = switched->trunk.ConditioningAt(step);
        const SegmentConditioning* got = cell.ConditioningAt(step);
        EXPECT_EQ(want ? want->class_index : -2, got ? got->class_index : -2)
            << "row " << row.branch_step << ", step " << step;
      }
    }
  }

  // At most 16 switches in a cell: each rides in every cell's path. A trunk
  // of 16 plans; with a switch prompt its cells would have 17, refused before
  // any work (its cells could not be promoted).
  Path many = trunk;
  for (int k = 1; k <= 16; ++k) {
    many = many.SwitchedAt(k, SegmentConditioning{"", "", k % 2});
  }
  PathToProto(many, r.mutable_trunk());
  EXPECT_TRUE(PlanGrid(r, Model(), {}).ok()) << PlanGrid(r, Model(), {}).status();
  r.set_switch_prompt("trouser");
  absl::Status refused = PlanGrid(r, Model(), {}).status();
  EXPECT_NE(refused.message().find("at most 16 times; this trunk's cells would 17"),
            std::string::npos) << refused;
  EXPECT_EQ(refused.message().rfind("trunk.segments:", 0), 0u) << refused;
  r.clear_switch_prompt();
  many = many.SwitchedAt(17, SegmentConditioning{"", "", 1});
  PathToProto(many, r.mutable_trunk());
  refused = PlanGrid(r, Model(), {}).status();
  EXPECT_NE(refused.message().find("would 17"), std::string::npos) << refused;
}

}  // namespace
}  // namespace dgrid
