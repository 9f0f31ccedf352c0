// The sampler a run asked for over its schedule: DDIM (ddim_schedule.h) or
// Euler ancestral (euler_ancestral.h), behind the one interface the batcher
// steps trajectories with. Both keep latents in the same scale, so a
// capture, a start latent or an x0 preview means the same under either.
//
//   ASSIGN_OR_RETURN(SamplerSchedule s, SamplerSchedule::Create(
//       manifest.schedule, {.steps = 30, .spacing = Spacing::kLeading,
//                           .sampler = Sampler::kEulerAncestral}));
//   x_T = s.initial_scale() * z;
//   s.Apply(i, eta, model_out, z, x, x0);   // x: latent at i -> i + 1
#ifndef DGRID_DENOISER_SERVICE_ENGINE_SAMPLER_SCHEDULE_H_
#define DGRID_DENOISER_SERVICE_ENGINE_SAMPLER_SCHEDULE_H_

#include <variant>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/bundle_manifest.h"
#include "denoiser_service/engine/ddim_schedule.h"
#include "denoiser_service/engine/euler_ancestral.h"

namespace dgrid {

struct SamplerChoice {
  int steps = 50;
  Spacing spacing = Spacing::kLeading;
  Sampler sampler = Sampler::kDdim;
};

class SamplerSchedule {
 public:
  // INVALID_ARGUMENT when steps is outside [1, train_timesteps].
  static absl::StatusOr<SamplerSchedule> Create(const NoiseScheduleSpec& spec,
                                                const SamplerChoice& choice);

  int steps() const;
  // Step i's timestep, to label it with (rounded where the model reads a
  // fraction), and the one the model reads.
  int timestep(int i) const;
  float model_timestep(int i) const;
  // x_T = initial_scale() z (1 but for Euler ancestral with trailing or
  // linspace spacing).
  double initial_scale() const;
  // Step i in place; see DdimSchedule::Apply and EulerAncestralSchedule::Apply.
  void Apply(int i, float eta, absl::Span<const float> model_out, absl::Span<const float> z,
             absl::Span<float> x, absl::Span<float> x0_out) const;

 private:
  explicit SamplerSchedule(std::variant<DdimSchedule, EulerAncestralSchedule> schedule)
      : schedule_(std::move(schedule)) {}
  std::variant<DdimSchedule, EulerAncestralSchedule> schedule_;
};

}  // namespace dgrid

#endif  // DGRID_DENOISER_SERVICE_ENGINE_SAMPLER_SCHEDULE_H_
