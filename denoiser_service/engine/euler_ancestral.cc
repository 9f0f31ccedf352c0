#include "denoiser_service/engine/euler_ancestral.h"

#include <algorithm>
#include <cmath>

#include "common/timesteps.h"
#include "denoiser_service/engine/ddim_schedule.h"

namespace dgrid {

absl::StatusOr<EulerAncestralSchedule> EulerAncestralSchedule::Create(
    const NoiseScheduleSpec& spec, int steps, Spacing spacing) {
  // DDIM's timesteps and alpha-bar for each spacing (diffusers computes both
  // lists with one formula), and its check of `steps`.
  absl::StatusOr<DdimSchedule> ddim = DdimSchedule::Create(spec, steps, spacing);
  if (!ddim.ok()) return ddim.status();
  EulerAncestralSchedule s;
  s.prediction_ = spec.prediction;
  s.timesteps_ = ddim->timesteps();
  s.model_timesteps_.assign(s.timesteps_.begin(), s.timesteps_.end());
  s.sigmas_.resize(steps + 1);
  if (spacing == Spacing::kLinspace) {
    // diffusers' Euler schedulers keep linspace's fractions (in float32) and
    // interpolate sigma linearly between the training timesteps (np.interp).
    const std::vector<double> alphas = AlphasCumprod(spec);
    auto table = [&](int t) { return std::sqrt((1 - alphas[t]) / alphas[t]); };
    for (int i = 0; i < steps; ++i) {
      const float t = static_cast<float>(LinspaceTimestep(spec.train_timesteps, steps, i));
      const int below = std::min(static_cast<int>(t), spec.train_timesteps - 1);
      const double fraction = static_cast<double>(t) - below;
      s.model_timesteps_[i] = t;
      s.sigmas_[i] = fraction == 0
                         ? table(below)
                         : table(below) + (table(below + 1) - table(below)) * fraction;
    }
  } else {
    for (int i = 0; i < steps; ++i) {
      const double a = ddim->alpha_bar(i);
      s.sigmas_[i] = std::sqrt((1 - a) / a);
    }
  }
  s.sigmas_[steps] = 0.0;
  // init_noise_sigma: the largest sigma with trailing and linspace spacing,
  // sqrt(sigma_max^2 + 1) with leading.
  const double first = s.sigmas_[0];
  const double init_noise_sigma =
      spacing == Spacing::kLeading ? std::sqrt(first * first + 1) : first;
  s.initial_scale_ = init_noise_sigma / std::sqrt(first * first + 1);
  return s;
}

double EulerAncestralSchedule::sigma_up(int i, float eta) const {
  const double from = sigmas_[i], to = sigmas_[i + 1];
  const double variance = to * to * (from * from - to * to) / (from * from);
  return std::min(to, eta * std::sqrt(std::max(variance, 0.0)));
}

void EulerAncestralSchedule::Apply(int i, float eta, absl::Span<const float> model_out,
                                   absl::Span<const float> z, absl::Span<float> x,
                                   absl::Span<float> x0_out) const {
  const double sigma = sigmas_[i], next = sigmas_[i + 1];
  const double up = sigma_up(i, eta);
  const double down = std::sqrt(std::max(next * next - up * up, 0.0));
  // Engine scale to sigma scale and back.
  const double in_scale = std::sqrt(sigma * sigma + 1);
  const double out_scale = 1 / std::sqrt(next * next + 1);
  const double ratio = (down - sigma) / sigma;
  const bool noisy = up != 0.0 && !z.empty();
  const size_t n = x.size();
  for (size_t j = 0; j < n; ++j) {
    const double s = x[j] * in_scale, out = model_out[j];
    double x0;
    switch (prediction_) {
      case PredictionType::kEpsilon:
        x0 = s - sigma * out;
        break;
      case PredictionType::kSample:
        x0 = out;
        break;
      case PredictionType::kVPrediction:
      default:
        // diffusers: out * (-sigma / sqrt(sigma^2 + 1)) + s / (sigma^2 + 1).
        x0 = (x[j] - sigma * out) / in_scale;
        break;
    }
    if (!x0_out.empty()) x0_out[j] = static_cast<float>(x0);
    double s_next = s + (s - x0) * ratio;
    if (noisy) s_next += up * z[j];
    x[j] = static_cast<float>(s_next * out_scale);
  }
}

}  // namespace dgrid
