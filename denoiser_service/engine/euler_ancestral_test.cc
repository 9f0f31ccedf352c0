#include "denoiser_service/engine/euler_ancestral.h"

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "common/philox.h"
#include "common/timesteps.h"
#include "denoiser_service/engine/ddim_schedule.h"
#include "gtest/gtest.h"

namespace dgrid {
namespace {

NoiseScheduleSpec StableDiffusion(PredictionType prediction) {
  NoiseScheduleSpec spec;
  spec.beta_schedule = "scaled_linear";
  spec.beta_start = 0.00085;
  spec.beta_end = 0.012;
  spec.train_timesteps = 1000;
  spec.prediction = prediction;
  spec.steps_offset = 1;
  spec.set_alpha_to_one = false;
  return spec;
}

// A stand-in model: any fixed function of the input and the timestep.
float Model(float input, float t, size_t j) {
  return 0.7f * input + 0.05f * std::sin(0.37f * static_cast<float>(j)) + t * 1e-4f;
}

// diffusers' Euler timesteps and sigmas: whole timesteps for leading and
// trailing; for linspace np.linspace(0, T - 1, steps, dtype=float32)
// reversed, with sigma interpolated linearly (np.interp) in the table.
void DiffusersSigmas(const NoiseScheduleSpec& spec, int steps, Spacing spacing,
                     std::vector<float>* timesteps, std::vector<double>* sigmas) {
  const std::vector<double> alphas = AlphasCumprod(spec);
  std::vector<double> table;
  for (double a : alphas) table.push_back(std::sqrt((1 - a) / a));
  timesteps->clear();
  if (spacing == Spacing::kLinspace) {
    const int last = spec.train_timesteps - 1;
    for (int k = steps - 1; k >= 0; --k) {
      const double value = k == 0 ? 0.0 : k == steps - 1 ? last : k * (double(last) / (steps - 1));
      timesteps->push_back(static_cast<float>(value));
    }
  } else {
    for (int t : DdimTimesteps(spec.train_timesteps, steps, spacing, spec.steps_offset)) {
      timesteps->push_back(static_cast<float>(t));
    }
  }
  sigmas->clear();
  for (float t : *timesteps) {
    const int j = static_cast<int>(std::floor(t));
    const double slope = j + 1 < static_cast<int>(table.size()) ? table[j + 1] - table[j] : 0.0;
    sigmas->push_back(table[j] + slope * (t - j));
  }
  sigmas->push_back(0.0);
}

// diffusers' EulerAncestralDiscreteScheduler, transcribed as it reads
// (sigma scale throughout): the pipeline draws s = z init_noise_sigma,
// feeds the model s / sqrt(sigma^2 + 1), and steps s. Returns the latent
// after each step in the engine's scale, s / sqrt(sigma_next^2 + 1).
std::vector<std::vector<double>> Diffusers(const NoiseScheduleSpec& spec, int steps,
                                           Spacing spacing, const std::vector<float>& x_t,
                                           const std::vector<std::vector<float>>& noise) {
  std::vector<float> timesteps;
  std::vector<double> sigmas;
  DiffusersSigmas(spec, steps, spacing, &timesteps, &sigmas);
  // init_noise_sigma: sigmas.max() for linspace and trailing.
  const double init_noise_sigma =
      spacing != Spacing::kLeading ? sigmas[0] : std::sqrt(sigmas[0] * sigmas[0] + 1);
  std::vector<double> sample(x_t.begin(), x_t.end());
  for (double& v : sample) v *= init_noise_sigma;
  std::vector<std::vector<double>> out;
  for (int i = 0; i < steps; ++i) {
    const double sigma = sigmas[i];
    std::vector<double> next(sample.size());
    for (size_t j = 0; j < sample.size(); ++j) {
      const double model_input = sample[j] / std::sqrt(sigma * sigma + 1);
      const double model_output = Model(static_cast<float>(model_input), timesteps[i], j);
      double pred_original_sample;
      if (spec.prediction == PredictionType::kEpsilon) {
        pred_original_sample = sample[j] - sigma * model_output;
      } else {
        pred_original_sample = model_output * (-sigma / std::sqrt(sigma * sigma + 1)) +
                               sample[j] / (sigma * sigma + 1);
      }
      const double sigma_from = sigmas[i], sigma_to = sigmas[i + 1];
      const double sigma_up =
          std::sqrt(sigma_to * sigma_to * (sigma_from * sigma_from - sigma_to * sigma_to) /
                    (sigma_from * sigma_from));
      const double sigma_down = std::sqrt(sigma_to * sigma_to - sigma_up * sigma_up);
      const double derivative = (sample[j] - pred_original_sample) / sigma;
      const double dt = sigma_down - sigma;
      next[j] = sample[j] + derivative * dt + noise[i][j] * sigma_up;
    }
    sample = next;
    std::vector<double> engine_scale(sample.size());
    for (size_t j = 0; j < sample.size(); ++j) {
      engine_scale[j] = sample[j] / std::sqrt(sigmas[i + 1] * sigmas[i + 1] + 1);
    }
    out.push_back(engine_scale);
  }
  return out;
}

// The engine's trajectory: x_T = initial_scale z, the model fed x.
std::vector<std::vector<float>> Engine(const NoiseScheduleSpec& spec, int steps, Spacing spacing,
                                       const std::vector<float>& x_t,
                                       const std::vector<std::vector<float>>& noise) {
  auto s = EulerAncestralSchedule::Create(spec, steps, spacing);
  EXPECT_TRUE(s.ok()) << s.status();
  std::vector<float> x(x_t);
  for (float& v : x) v = static_cast<float>(v * s->initial_scale());
  std::vector<std::vector<float>> out;
  std::vector<float> model_out(x.size()), x0(x.size());
  for (int i = 0; i < steps; ++i) {
    for (size_t j = 0; j < x.size(); ++j) model_out[j] = Model(x[j], s->model_timestep(i), j);
    s->Apply(i, 1.0f, model_out, noise[i], absl::MakeSpan(x), absl::MakeSpan(x0));
    out.push_back(x);
  }
  return out;
}

std::vector<float> Gaussian(uint64_t seed, int step, size_t n) {
  std::vector<float> z(n);
  FillGaussian({seed, NoiseStream::kStep, static_cast<uint32_t>(step)}, absl::MakeSpan(z));
  return z;
}

// Given the same noise, every step equals diffusers' step (transcribed
// above), for epsilon and v prediction, leading, trailing and linspace
// spacing.
TEST(EulerAncestralTest, EveryStepEqualsDiffusersGivenTheSameNoise) {
  constexpr size_t kNumel = 64;
  for (PredictionType prediction : {PredictionType::kEpsilon, PredictionType::kVPrediction}) {
    for (Spacing spacing : {Spacing::kLeading, Spacing::kTrailing, Spacing::kLinspace}) {
      for (int steps : {1, 4, 20, 30}) {
        SCOPED_TRACE(::testing::Message()
                     << "prediction " << static_cast<int>(prediction) << ", spacing "
                     << static_cast<int>(spacing) << ", " << steps << " steps");
        const NoiseScheduleSpec spec = StableDiffusion(prediction);
        const std::vector<float> x_t = Gaussian(1, 0, kNumel);
        std::vector<std::vector<float>> noise;
        for (int i = 0; i < steps; ++i) noise.push_back(Gaussian(2, i, kNumel));
        const auto expected = Diffusers(spec, steps, spacing, x_t, noise);
        const auto actual = Engine(spec, steps, spacing, x_t, noise);
        for (int i = 0; i < steps; ++i) {
          double worst = 0;
          for (size_t j = 0; j < kNumel; ++j) {
            worst = std::max(worst, std::abs(actual[i][j] - expected[i][j]) /
                                        std::max(1.0, std::abs(expected[i][j])));
          }
          EXPECT_LT(worst, 1e-5) << "after step " << i;
        }
      }
    }
  }
}

// sigma_i = sqrt((1 - a) / a) at the step's timestep; 0 after the last.
TEST(EulerAncestralTest, SigmasComeFromTheScheduleAndEndAtZero) {
  const NoiseScheduleSpec spec = StableDiffusion(PredictionType::kEpsilon);
  auto s = EulerAncestralSchedule::Create(spec, 10, Spacing::kLeading);
  ASSERT_TRUE(s.ok());
  const std::vector<double> alphas = AlphasCumprod(spec);
  EXPECT_EQ(s->timestep(0), 901);  // (0..9) * 100 reversed, + steps_offset
  for (int i = 0; i < 10; ++i) {
    const double a = alphas[s->timestep(i)];
    EXPECT_DOUBLE_EQ(s->sigma(i), std::sqrt((1 - a) / a));
    if (i > 0) EXPECT_LT(s->sigma(i), s->sigma(i - 1));
  }
  EXPECT_EQ(s->sigma(10), 0.0);
  // Leading: init_noise_sigma = sqrt(sigma_0^2 + 1), so x_T is z itself.
  EXPECT_DOUBLE_EQ(s->initial_scale(), 1.0);
  auto trailing = EulerAncestralSchedule::Create(spec, 10, Spacing::kTrailing);
  ASSERT_TRUE(trailing.ok());
  EXPECT_EQ(trailing->timestep(0), 999);
  const double sigma0 = trailing->sigma(0);
  EXPECT_NEAR(trailing->initial_scale(), sigma0 / std::sqrt(sigma0 * sigma0 + 1), 1e-12);
  EXPECT_FALSE(EulerAncestralSchedule::Create(spec, 0, Spacing::kLeading).ok());
  EXPECT_FALSE(EulerAncestralSchedule::Create(spec, 1001, Spacing::kLeading).ok());
}

// Linspace: the model reads fractional timesteps, labelled by the nearest
// whole one, and x_T is drawn at sigma_0 itself, as with trailing.
TEST(EulerAncestralTest, LinspaceRunsFractionalTimesteps) {
  const NoiseScheduleSpec spec = StableDiffusion(PredictionType::kEpsilon);
  auto s = EulerAncestralSchedule::Create(spec, 50, Spacing::kLinspace);
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(LinspaceHasFractions(1000, 50));
  EXPECT_EQ(s->model_timestep(0), 999.0f);
  EXPECT_FLOAT_EQ(s->model_timestep(1), 999.0f * 48 / 49);  // 978.61...
  EXPECT_EQ(s->timestep(1), 979);
  EXPECT_EQ(s->model_timestep(49), 0.0f);
  const std::vector<double> alphas = AlphasCumprod(spec);
  const double between = std::sqrt((1 - alphas[978]) / alphas[978]),
               above = std::sqrt((1 - alphas[979]) / alphas[979]);
  EXPECT_GT(s->sigma(1), between);
  EXPECT_LT(s->sigma(1), above);
  const double sigma0 = s->sigma(0);
  EXPECT_NEAR(s->initial_scale(), sigma0 / std::sqrt(sigma0 * sigma0 + 1), 1e-12);
  // Whole timesteps at leading and trailing spacing, and at one step.
  for (Spacing spacing : {Spacing::kLeading, Spacing::kTrailing}) {
    auto whole = EulerAncestralSchedule::Create(spec, 50, spacing);
    for (int i = 0; i < 50; ++i) EXPECT_EQ(whole->model_timestep(i), whole->timestep(i));
  }
  EXPECT_FALSE(LinspaceHasFractions(1000, 1));
  EXPECT_EQ(EulerAncestralSchedule::Create(spec, 1, Spacing::kLinspace)->model_timestep(0), 0.0f);
}

std::vector<double> ReadNumbers(std::istringstream& line) {
  std::vector<double> v;
  double d;
  while (line >> d) v.push_back(d);
  return v;
}

// Against numpy, written by tests/fixtures/make_fixtures.py as diffusers'
// EulerAncestralDiscreteScheduler.set_timesteps computes them (np.linspace
// in float32, np.interp): from float64 alpha-bars as the engine's, and from
// diffusers' float32 ones, whose 1 - alpha-bar near timestep 0 keeps few
// digits (1e-4 relative in the smallest sigma).
TEST(EulerAncestralTest, LinspaceMatchesNumpysTimestepsAndSigmas) {
  const char* dir = std::getenv("DGRID_FIXTURES");
  ASSERT_NE(dir, nullptr) << "DGRID_FIXTURES is not set";
  std::ifstream in(std::string(dir) + "/ddim_reference.txt");
  ASSERT_TRUE(in) << "no ddim_reference.txt in " << dir;
  std::string text;
  std::optional<EulerAncestralSchedule> schedule;
  int checked = 0;
  double worst = 0, worst32 = 0;
  while (std::getline(in, text)) {
    std::istringstream line(text);
    std::string tag;
    line >> tag;
    if (tag == "euler_linspace") {
      NoiseScheduleSpec spec;
      int steps = 0;
      line >> spec.beta_schedule >> spec.beta_start >> spec.beta_end >> steps;
      auto s = EulerAncestralSchedule::Create(spec, steps, Spacing::kLinspace);
      ASSERT_TRUE(s.ok()) << s.status();
      schedule = std::move(*s);
    } else if (tag == "model_timesteps") {
      const std::vector<double> ts = ReadNumbers(line);
      ASSERT_EQ(static_cast<int>(ts.size()), schedule->steps());
      for (size_t i = 0; i < ts.size(); ++i) EXPECT_EQ(schedule->model_timestep(i), ts[i]) << i;
    } else if (tag == "sigmas" || tag == "sigmas32") {
      const std::vector<double> sigmas = ReadNumbers(line);
      ASSERT_EQ(static_cast<int>(sigmas.size()), schedule->steps());
      const bool float32 = tag == "sigmas32";
      for (size_t i = 0; i < sigmas.size(); ++i) {
        const double relative = std::abs(schedule->sigma(i) - sigmas[i]) / sigmas[i];
        EXPECT_LT(relative, float32 ? 2e-4 : 1e-10)
            << tag << " " << i << ": " << schedule->sigma(i) << " vs " << sigmas[i];
        double& w = float32 ? worst32 : worst;
        w = std::max(w, relative);
      }
      ++checked;
    }
  }
  EXPECT_EQ(checked, 20);  // 2 beta schedules x 5 step counts, 2 alpha-bar precisions
  std::cout << "linspace sigmas: worst relative difference " << worst << " (float64 alpha-bars), "
            << worst32 << " (diffusers' float32)\n";
}

// What a step adds for its noise is sigma_up z (in the sigma scale): over
// many elements of the engine's counter noise it is N(0, sigma_up^2).
TEST(EulerAncestralTest, TheInjectedNoiseIsNormalWithVarianceSigmaUpSquared) {
  const NoiseScheduleSpec spec = StableDiffusion(PredictionType::kEpsilon);
  auto s = EulerAncestralSchedule::Create(spec, 20, Spacing::kLeading);
  ASSERT_TRUE(s.ok());
  constexpr size_t kNumel = 1 << 16;
  const std::vector<float> x_start = Gaussian(3, 0, kNumel);
  const std::vector<float> model_out = Gaussian(4, 0, kNumel);
  for (int i : {0, 7, 18}) {
    std::vector<float> quiet(x_start), noisy(x_start), x0(kNumel);
    s->Apply(i, 1.0f, model_out, {}, absl::MakeSpan(quiet), absl::MakeSpan(x0));
    s->Apply(i, 1.0f, model_out, Gaussian(5, i, kNumel), absl::MakeSpan(noisy),
             absl::MakeSpan(x0));
    const double to_sigma_scale = std::sqrt(s->sigma(i + 1) * s->sigma(i + 1) + 1);
    double sum = 0, sum_sq = 0;
    for (size_t j = 0; j < kNumel; ++j) {
      const double injected = (noisy[j] - quiet[j]) * to_sigma_scale;
      sum += injected;
      sum_sq += injected * injected;
    }
    const double mean = sum / kNumel, variance = sum_sq / kNumel - mean * mean;
    const double up = s->sigma_up(i, 1.0f);
    ASSERT_GT(up, 0.0);
    EXPECT_NEAR(mean / up, 0.0, 0.02) << "step " << i;
    EXPECT_NEAR(variance / (up * up), 1.0, 0.03) << "step " << i;
  }
  // The last step lands on sigma 0: no noise, and the sample is the x0
  // prediction.
  EXPECT_EQ(s->sigma_up(19, 1.0f), 0.0);
  std::vector<float> x(x_start), x0(kNumel);
  s->Apply(19, 1.0f, model_out, Gaussian(6, 19, kNumel), absl::MakeSpan(x), absl::MakeSpan(x0));
  for (size_t j = 0; j < 8; ++j) EXPECT_NEAR(x[j], x0[j], 1e-5);
}

// eta scales the fresh noise (k-diffusion's eta): 0 is plain Euler, which
// the noise does not touch.
TEST(EulerAncestralTest, EtaZeroIsDeterministicEuler) {
  const NoiseScheduleSpec spec = StableDiffusion(PredictionType::kEpsilon);
  auto s = EulerAncestralSchedule::Create(spec, 20, Spacing::kLeading);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->sigma_up(3, 0.0f), 0.0);
  EXPECT_NEAR(s->sigma_up(3, 0.5f), 0.5 * s->sigma_up(3, 1.0f), 1e-12);
  std::vector<float> a = Gaussian(7, 0, 32), b = a, x0(32);
  const std::vector<float> out = Gaussian(8, 0, 32);
  s->Apply(3, 0.0f, out, Gaussian(9, 3, 32), absl::MakeSpan(a), absl::MakeSpan(x0));
  s->Apply(3, 0.0f, out, {}, absl::MakeSpan(b), absl::MakeSpan(x0));
  EXPECT_EQ(a, b);
  // Plain Euler: s_next = x0 + sigma_next (s - x0) / sigma.
  std::vector<float> c = Gaussian(7, 0, 32);
  const double sigma = s->sigma(3), next = s->sigma(4);
  for (size_t j = 0; j < 32; ++j) {
    const double sv = c[j] * std::sqrt(sigma * sigma + 1), x0v = sv - sigma * out[j];
    const double expected = (x0v + next * (sv - x0v) / sigma) / std::sqrt(next * next + 1);
    EXPECT_NEAR(a[j], expected, 1e-5);
  }
}

}  // namespace
}  // namespace dgrid
