#include "denoiser_service/engine/ddim_schedule.h"

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

#include "common/timesteps.h"
#include "gtest/gtest.h"

namespace dgrid {
namespace {

NoiseScheduleSpec LinearSpec(int offset, bool set_alpha_to_one) {
  NoiseScheduleSpec spec;
  spec.steps_offset = offset;
  spec.set_alpha_to_one = set_alpha_to_one;
  return spec;
}

TEST(DdimScheduleTest, LeadingSpacingMatchesTheOriginalApp) {
  // Stable Diffusion's scheduler config (steps_offset 1): 981, 961, ..., 1.
  auto s = DdimSchedule::Create(LinearSpec(1, false), 50, Spacing::kLeading);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->timestep(0), 981);
  EXPECT_EQ(s->timestep(3), 921);
  EXPECT_EQ(s->timestep(49), 1);
}

TEST(DdimScheduleTest, TrailingSpacingEndsAtTheLastTrainTimestep) {
  auto s = DdimSchedule::Create(LinearSpec(0, true), 50, Spacing::kTrailing);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->timestep(0), 999);
  EXPECT_EQ(s->timestep(49), 19);
  EXPECT_DOUBLE_EQ(s->alpha_bar_prev(49), 1.0);
}

// diffusers' DDIMScheduler.step goes from t to t - T // steps; with trailing
// spacing at 30 steps that is not the next timestep in the list.
TEST(DdimScheduleTest, TrailingStepsEndWhereDiffusersEndsThem) {
  const std::vector<double> alphas = AlphasCumprod(LinearSpec(0, true));
  auto thirty = DdimSchedule::Create(LinearSpec(0, true), 30, Spacing::kTrailing);
  ASSERT_TRUE(thirty.ok());
  EXPECT_EQ(thirty->timestep(1), 966);
  EXPECT_EQ(thirty->timestep(2), 932);
  EXPECT_DOUBLE_EQ(thirty->alpha_bar_prev(1), alphas[933]);
  // At 7 steps the last step ends at alpha-bar[0] (t 142 - 142), not at 1.
  auto seven = DdimSchedule::Create(LinearSpec(0, true), 7, Spacing::kTrailing);
  ASSERT_TRUE(seven.ok());
  EXPECT_EQ(seven->timestep(6), 142);
  EXPECT_DOUBLE_EQ(seven->alpha_bar_prev(6), alphas[0]);
  // np.round rounds 812.5 to 812 (even): diffusers' 16 trailing steps.
  auto sixteen = DdimSchedule::Create(LinearSpec(0, true), 16, Spacing::kTrailing);
  ASSERT_TRUE(sixteen.ok());
  EXPECT_EQ(sixteen->timesteps(),
            (std::vector<int>{999, 937, 874, 811, 749, 687, 624, 561, 499, 437, 374, 311, 249,
                              187, 124, 61}));
}

// Leading spacing whose offset would push a timestep past the table.
TEST(DdimScheduleTest, LeadingStepsPastTheScheduleAreRefused) {
  auto s = DdimSchedule::Create(LinearSpec(1, false), 1000, Spacing::kLeading);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.status().message().rfind("steps: 1000 leading steps with steps_offset 1 would "
                                       "reach timestep 1000",
                                       0),
            0u)
      << s.status();
  EXPECT_NE(s.status().message().find("999 steps fit (the most below 1000), or give trailing"),
            absl::string_view::npos)
      << s.status();
  // Offset 2: 500 steps reach 1000 (ratio 2), 499 stop at 996.
  auto five_hundred = DdimSchedule::Create(LinearSpec(2, false), 500, Spacing::kLeading);
  ASSERT_FALSE(five_hundred.ok());
  EXPECT_NE(five_hundred.status().message().find("499 steps fit (the most below 500)"),
            absl::string_view::npos)
      << five_hundred.status();
  EXPECT_TRUE(DdimSchedule::Create(LinearSpec(2, false), 499, Spacing::kLeading).ok());
  EXPECT_TRUE(DdimSchedule::Create(LinearSpec(1, false), 999, Spacing::kLeading).ok());
  EXPECT_TRUE(DdimSchedule::Create(LinearSpec(1, false), 1000, Spacing::kTrailing).ok());
}

TEST(DdimScheduleTest, StepsOutOfRangeNameTheField) {
  for (int steps : {0, -3, 1001}) {
    auto s = DdimSchedule::Create(LinearSpec(0, true), steps, Spacing::kLeading);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.status().message().rfind("steps must be in [1, 1000]", 0), 0u) << s.status();
  }
}

TEST(DdimScheduleTest, EtaZeroHasNoNoiseAndEtaOneIsAncestral) {
  auto s = DdimSchedule::Create(LinearSpec(0, true), 50, Spacing::kLeading);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->sigma(10, 0.0f), 0.0);
  // eta = 1: sigma^2 is the DDPM posterior variance between the two timesteps.
  const double a = s->alpha_bar(10), ap = s->alpha_bar_prev(10);
  EXPECT_NEAR(s->sigma(10, 1.0f), std::sqrt((1 - ap) / (1 - a) * (1 - a / ap)), 1e-12);
}

// The orchestrator plans rows by DdimLastStepAddsNoise, without the
// schedule's alphas: it must say what the schedule's last sigma says.
TEST(DdimScheduleTest, LastStepAddsNoiseWhereItsSigmaIsNotZero) {
  int noiseless = 0, noisy = 0;
  for (const Spacing spacing : {Spacing::kLeading, Spacing::kTrailing}) {
    for (const int offset : {0, 1}) {
      for (const bool to_one : {false, true}) {
        for (int steps = 1; steps <= 1000; steps += steps < 40 ? 1 : 37) {
          auto s = DdimSchedule::Create(LinearSpec(offset, to_one), steps, spacing);
          if (!s.ok()) continue;  // leading steps past the table's end
          const bool adds = s->sigma(steps - 1, 1.0f) > 0;
          (adds ? noisy : noiseless) += 1;
          EXPECT_EQ(DdimLastStepAddsNoise(s->timestep(steps - 1), 1000, steps, to_one), adds)
              << (spacing == Spacing::kLeading ? "leading" : "trailing") << " offset " << offset
              << " set_alpha_to_one " << to_one << " steps " << steps;
        }
      }
    }
  }
  // Both answers occur, in each way the docs name.
  EXPECT_GT(noiseless, 0);
  EXPECT_GT(noisy, 0);
  EXPECT_TRUE(DdimLastStepAddsNoise(142, 1000, 7, /*set_alpha_to_one=*/true));
  EXPECT_FALSE(DdimLastStepAddsNoise(0, 1000, 50, /*set_alpha_to_one=*/false));
}

std::vector<double> ReadNumbers(std::istringstream& line) {
  std::vector<double> v;
  double d;
  while (line >> d) v.push_back(d);
  return v;
}

// Vectors written by tests/fixtures/make_fixtures.py from diffusers'
// DDIMScheduler.step formulas in float64, an implementation independent of
// this one.
TEST(DdimScheduleTest, MatchesIndependentPythonReference) {
  const char* dir = std::getenv("DGRID_FIXTURES");
  ASSERT_NE(dir, nullptr) << "DGRID_FIXTURES is not set";
  std::ifstream in(std::string(dir) + "/ddim_reference.txt");
  ASSERT_TRUE(in) << "no ddim_reference.txt in " << dir;
  std::string text;
  std::optional<DdimSchedule> schedule;
  int cases = 0, step = 0, trailing_lists = 0, linspace_lists = 0;
  float eta = 0;
  std::map<std::string, std::vector<double>> v;
  double worst = 0;
  while (std::getline(in, text)) {
    std::istringstream line(text);
    std::string tag;
    line >> tag;
    if (tag == "schedule") {
      NoiseScheduleSpec spec;
      std::string spacing;
      int set_one, steps;
      line >> spec.beta_schedule >> spec.beta_start >> spec.beta_end >> set_one >> steps >>
          spacing >> spec.steps_offset;
      spec.set_alpha_to_one = set_one != 0;
      auto s = DdimSchedule::Create(spec, steps,
                                    spacing == "leading"    ? Spacing::kLeading
                                    : spacing == "linspace" ? Spacing::kLinspace
                                                            : Spacing::kTrailing);
      ASSERT_TRUE(s.ok()) << s.status();
      schedule = std::move(*s);
    } else if (tag == "timesteps") {
      const std::vector<double> ts = ReadNumbers(line);
      ASSERT_EQ(ts.size(), schedule->timesteps().size());
      for (size_t i = 0; i < ts.size(); ++i) EXPECT_EQ(schedule->timestep(i), ts[i]) << i;
    } else if (tag == "trailing" || tag == "linspace") {
      // numpy's timesteps for one step count.
      int train = 0, steps = 0;
      line >> train >> steps;
      const std::vector<double> ts = ReadNumbers(line);
      const std::vector<int> ours = DdimTimesteps(
          train, steps, tag == "trailing" ? Spacing::kTrailing : Spacing::kLinspace, 0);
      ASSERT_EQ(ts.size(), ours.size()) << steps;
      int differ = 0;
      for (size_t i = 0; i < ts.size(); ++i) differ += ours[i] != ts[i];
      EXPECT_EQ(differ, 0) << tag << " " << steps << " steps: " << differ
                           << " timesteps differ from numpy";
      ++(tag == "trailing" ? trailing_lists : linspace_lists);
    } else if (tag == "euler_linspace" || tag == "model_timesteps" || tag == "sigmas" ||
               tag == "sigmas32") {
      continue;  // Euler ancestral's (euler_ancestral_test.cc)
    } else if (tag == "case") {
      line >> step >> eta;
      v.clear();
    } else {
      v[tag] = ReadNumbers(line);
      if (tag != "x0") continue;
      std::vector<float> x(v["x"].begin(), v["x"].end()), eps(v["eps"].begin(), v["eps"].end()),
          z(v["z"].begin(), v["z"].end()), x0(x.size());
      schedule->Apply(step, eta, eps, z, absl::MakeSpan(x), absl::MakeSpan(x0));
      for (size_t j = 0; j < x.size(); ++j) {
        const double tol = 2e-5 * (1 + std::abs(v["prev"][j]));
        EXPECT_NEAR(x[j], v["prev"][j], tol) << "step " << step << " eta " << eta;
        EXPECT_NEAR(x0[j], v["x0"][j], 2e-5 * (1 + std::abs(v["x0"][j])));
        worst = std::max(worst, std::abs(x[j] - v["prev"][j]));
      }
      ++cases;
    }
  }
  EXPECT_EQ(cases, 336);  // 2 schedules x 2 final alphas x 7 step counts x 4 steps x 3 etas
  EXPECT_GT(trailing_lists, 900);  // of 1000 step counts, less numpy's n + 1 quirks
  EXPECT_EQ(linspace_lists, 1000);
  std::cout << "checked " << cases << " DDIM steps; worst |x_prev - reference| = " << worst
            << "\n";
}

}  // namespace
}  // namespace dgrid
