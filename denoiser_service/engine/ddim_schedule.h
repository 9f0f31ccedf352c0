// DDIM with eta (Song et al. 2021), following diffusers' DDIMScheduler.step:
//
//   x0    = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)
//   sigma = eta sqrt((1 - a_prev) / (1 - a_t)) sqrt(1 - a_t / a_prev)
//   x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps + sigma z
//
// where a = alpha-bar (cumulative product). Step index i runs timestep
// timesteps[i]; "the latent at step i" is the input to step i, so step 0
// starts from x_T and the latent at step `steps` is the sample.
//
//   ASSIGN_OR_RETURN(DdimSchedule s, DdimSchedule::Create(spec, 50, Spacing::kLeading));
//   s.Apply(i, eta, model_out, z, x, x0);   // x: latent at i -> latent at i + 1
//
// Plain C++ over float spans: testable without torch.
#ifndef DGRID_DENOISER_ENGINE_DDIM_SCHEDULE_H_
#define DGRID_DENOISER_ENGINE_DDIM_SCHEDULE_H_

#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/bundle_manifest.h"
#include "common/timesteps.h"  // AlphasCumprod

namespace dgrid {

class DdimSchedule {
 public:
  // INVALID_ARGUMENT naming sampler.steps when steps is outside
  // [1, train_timesteps].
  static absl::StatusOr<DdimSchedule> Create(const NoiseScheduleSpec& spec, int steps,
                                             Spacing spacing);

  int steps() const { return static_cast<int>(timesteps_.size()); }
  int timestep(int i) const { return timesteps_[i]; }
  const std::vector<int>& timesteps() const { return timesteps_; }
  double alpha_bar(int i) const { return alpha_bar_[i]; }
  // Alpha-bar after step i: that of timesteps[i + 1], or the final value.
  double alpha_bar_prev(int i) const { return alpha_bar_prev_[i]; }
  double sigma(int i, float eta) const;

  // Applies step i in place: `x` holds the latent at step i and becomes the
  // latent at step i + 1. `model_out` is the (guided) model output in the
  // bundle's prediction type. `z` is the step noise; it may be empty when
  // eta == 0. `x0_out`, if not empty, receives the x0 prediction.
  void Apply(int i, float eta, absl::Span<const float> model_out, absl::Span<const float> z,
             absl::Span<float> x, absl::Span<float> x0_out) const;

 private:
  PredictionType prediction_ = PredictionType::kEpsilon;
  std::vector<int> timesteps_;
  std::vector<double> alpha_bar_;
  std::vector<double> alpha_bar_prev_;
};

}  // namespace dgrid

#endif  // DGRID_DENOISER_ENGINE_DDIM_SCHEDULE_H_
