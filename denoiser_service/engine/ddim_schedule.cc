#include "denoiser_service/engine/ddim_schedule.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/timesteps.h"

namespace dgrid {

absl::StatusOr<DdimSchedule> DdimSchedule::Create(const NoiseScheduleSpec& spec, int steps,
                                                  Spacing spacing) {
  const int train = spec.train_timesteps;
  if (steps < 1 || steps > train) {
    return absl::InvalidArgumentError(
        absl::StrCat("steps must be in [1, ", train, "], got ", steps));
  }
  if (const std::string problem = TimestepsProblem(train, steps, spacing, spec.steps_offset);
      !problem.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("steps: ", problem));
  }
  DdimSchedule s;
  s.prediction_ = spec.prediction;
  s.timesteps_ = DdimTimesteps(train, steps, spacing, spec.steps_offset);
  const std::vector<double> alphas = AlphasCumprod(spec);
  const double final_alpha = spec.set_alpha_to_one ? 1.0 : alphas[0];
  s.alpha_bar_.resize(steps);
  s.alpha_bar_prev_.resize(steps);
  for (int i = 0; i < steps; ++i) s.alpha_bar_[i] = alphas[s.timesteps_[i]];
  // DDIMScheduler.step's previous timestep, t - train // steps (the final
  // alpha below 0). With leading spacing it is the next timestep in the list.
  // With trailing spacing and a step count that does not divide train it is
  // not always: from 966 at 30 steps diffusers steps to alpha-bar at 933 and
  // the next step starts from 932, and at 7 steps the last step ends at
  // alpha-bar[0], not the final alpha. The engine does the same, so that it
  // samples what diffusers samples.
  for (int i = 0; i < steps; ++i) {
    const int prev = DdimPreviousTimestep(s.timesteps_[i], train, steps);
    s.alpha_bar_prev_[i] = prev >= 0 ? alphas[prev] : final_alpha;
  }
  return s;
}

double DdimSchedule::sigma(int i, float eta) const {
  const double a_t = alpha_bar_[i], a_prev = alpha_bar_prev_[i];
  const double variance = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev);
  return eta * std::sqrt(std::max(variance, 0.0));
}

void DdimSchedule::Apply(int i, float eta, absl::Span<const float> model_out,
                         absl::Span<const float> z, absl::Span<float> x,
                         absl::Span<float> x0_out) const {
  const double a_t = alpha_bar_[i], a_prev = alpha_bar_prev_[i];
  const double sqrt_a = std::sqrt(a_t), sqrt_1ma = std::sqrt(1 - a_t);
  const double sig = sigma(i, eta);
  const float c_x0 = static_cast<float>(std::sqrt(a_prev));
  const float c_eps = static_cast<float>(std::sqrt(std::max(1 - a_prev - sig * sig, 0.0)));
  const float c_z = static_cast<float>(sig);
  const bool noisy = c_z != 0.0f && !z.empty();
  const size_t n = x.size();
  for (size_t j = 0; j < n; ++j) {
    const float xt = x[j], out = model_out[j];
    float x0, eps;
    switch (prediction_) {
      case PredictionType::kEpsilon:
        eps = out;
        x0 = static_cast<float>((xt - sqrt_1ma * out) / sqrt_a);
        break;
      case PredictionType::kSample:
        x0 = out;
        eps = static_cast<float>((xt - sqrt_a * out) / sqrt_1ma);
        break;
      case PredictionType::kVPrediction:
      default:
        x0 = static_cast<float>(sqrt_a * xt - sqrt_1ma * out);
        eps = static_cast<float>(sqrt_a * out + sqrt_1ma * xt);
        break;
    }
    if (!x0_out.empty()) x0_out[j] = x0;
    float next = c_x0 * x0 + c_eps * eps;
    if (noisy) next += c_z * z[j];
    x[j] = next;
  }
}

}  // namespace dgrid
