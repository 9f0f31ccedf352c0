#include "denoiser_service/engine/sampler_schedule.h"

#include <utility>

namespace dgrid {

absl::StatusOr<SamplerSchedule> SamplerSchedule::Create(const NoiseScheduleSpec& spec,
                                                        const SamplerChoice& choice) {
  if (choice.sampler == Sampler::kEulerAncestral) {
    absl::StatusOr<EulerAncestralSchedule> euler =
        EulerAncestralSchedule::Create(spec, choice.steps, choice.spacing);
    if (!euler.ok()) return euler.status();
    return SamplerSchedule(std::move(*euler));
  }
  absl::StatusOr<DdimSchedule> ddim = DdimSchedule::Create(spec, choice.steps, choice.spacing);
  if (!ddim.ok()) return ddim.status();
  return SamplerSchedule(std::move(*ddim));
}

int SamplerSchedule::steps() const {
  return std::visit([](const auto& s) { return s.steps(); }, schedule_);
}

int SamplerSchedule::timestep(int i) const {
  return std::visit([i](const auto& s) { return s.timestep(i); }, schedule_);
}

float SamplerSchedule::model_timestep(int i) const {
  if (const auto* euler = std::get_if<EulerAncestralSchedule>(&schedule_)) {
    return euler->model_timestep(i);
  }
  return static_cast<float>(timestep(i));
}

double SamplerSchedule::initial_scale() const {
  if (const auto* euler = std::get_if<EulerAncestralSchedule>(&schedule_)) {
    return euler->initial_scale();
  }
  return 1.0;
}

void SamplerSchedule::Apply(int i, float eta, absl::Span<const float> model_out,
                            absl::Span<const float> z, absl::Span<float> x,
                            absl::Span<float> x0_out) const {
  std::visit([&](const auto& s) { s.Apply(i, eta, model_out, z, x, x0_out); }, schedule_);
}

}  // namespace dgrid
