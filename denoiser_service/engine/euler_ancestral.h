// Euler ancestral: Karras et al.'s Euler step with ancestral noise, as
// k-diffusion's sample_euler_ancestral and diffusers'
// EulerAncestralDiscreteScheduler, over the noise levels
// sigma_i = sqrt((1 - a_t) / a_t) at the step's timestep t (a = alpha-bar;
// with linspace spacing t is fractional and sigma interpolated linearly
// between the training timesteps around it), and sigma = 0 after the last
// step:
//
//   x0       = the model's x0 prediction at sigma_i (from eps, v or x0)
//   sigma_up = min(sigma_next, eta sqrt(sigma_next^2 (sigma_i^2 - sigma_next^2) / sigma_i^2))
//   sigma_dn = sqrt(sigma_next^2 - sigma_up^2)
//   s_next   = s + (s - x0) / sigma_i * (sigma_dn - sigma_i) + sigma_up z
//
// where s is the latent in the sigma ("variance exploding") scale. eta = 1
// is diffusers' sampler, eta = 0 plain (deterministic) Euler.
//
// The engine keeps every latent in DDIM's scale, x = s / sqrt(sigma^2 + 1),
// which is also the model's input (diffusers' scale_model_input). Captures,
// start latents, previews and cache entries then mean the same under both
// samplers, and the last latent (sigma 0) is the sample in either scale. x_T
// is initial_scale() z: diffusers draws s_T = init_noise_sigma z.
//
//   ASSIGN_OR_RETURN(EulerAncestralSchedule s,
//                    EulerAncestralSchedule::Create(spec, 30, Spacing::kLeading));
//   s.Apply(i, /*eta=*/1.0f, model_out, z, x, x0);   // x: latent at i -> i + 1
//
// Plain C++ over float spans: testable without torch.
#ifndef DGRID_DENOISER_SERVICE_ENGINE_EULER_ANCESTRAL_H_
#define DGRID_DENOISER_SERVICE_ENGINE_EULER_ANCESTRAL_H_

#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/bundle_manifest.h"

namespace dgrid {

class EulerAncestralSchedule {
 public:
  // INVALID_ARGUMENT when steps is outside [1, train_timesteps].
  static absl::StatusOr<EulerAncestralSchedule> Create(const NoiseScheduleSpec& spec, int steps,
                                                       Spacing spacing);

  int steps() const { return static_cast<int>(timesteps_.size()); }
  // Step i's timestep: as DDIM's for leading and trailing spacing; for
  // linspace the nearest integer to the fractional one the model reads.
  int timestep(int i) const { return timesteps_[i]; }
  // The timestep the model reads at step i (fractional with linspace).
  float model_timestep(int i) const { return model_timesteps_[i]; }
  // The noise level at step i's input; sigma(steps()) is 0.
  double sigma(int i) const { return sigmas_[i]; }
  // The fresh noise step i adds, in the sigma scale.
  double sigma_up(int i, float eta) const;
  // x_T = initial_scale() z in the engine's scale: diffusers'
  // init_noise_sigma (sqrt(sigma_0^2 + 1) with leading spacing, sigma_0
  // with trailing and linspace) over sqrt(sigma_0^2 + 1).
  double initial_scale() const { return initial_scale_; }

  // Applies step i in place: `x` holds the latent at step i (engine scale)
  // and becomes the latent at step i + 1. `model_out` is the (guided) model
  // output in the bundle's prediction type, `z` the step's N(0, 1) noise
  // (may be empty when eta == 0), `x0_out` (if not empty) the x0 prediction.
  void Apply(int i, float eta, absl::Span<const float> model_out, absl::Span<const float> z,
             absl::Span<float> x, absl::Span<float> x0_out) const;

 private:
  PredictionType prediction_ = PredictionType::kEpsilon;
  std::vector<int> timesteps_;
  std::vector<float> model_timesteps_;
  std::vector<double> sigmas_;  // steps() + 1, the last 0
  double initial_scale_ = 1.0;
};

}  // namespace dgrid

#endif  // DGRID_DENOISER_SERVICE_ENGINE_EULER_ANCESTRAL_H_
