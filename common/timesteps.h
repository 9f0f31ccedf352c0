// The timestep that each DDIM step runs, for diffusers' "leading",
// "trailing" and "linspace" spacings (Euler ancestral's, but for linspace's
// fraction). The engine samples with it and the orchestrator labels
// grid rows with it, so both agree by construction.
//
//   DdimTimesteps(1000, 50, Spacing::kLeading, 1);  // 981, 961, ..., 1
//
// Protobuf-free.
#ifndef DGRID_COMMON_TIMESTEPS_H_
#define DGRID_COMMON_TIMESTEPS_H_

#include <string>
#include <vector>

#include "common/bundle_manifest.h"

namespace dgrid {

// Step i's timestep under "linspace" spacing before any rounding: numpy's
// np.linspace(0, train - 1, steps)[::-1][i], in double. DDIM rounds it;
// Euler ancestral runs it as float32, as diffusers' Euler schedulers do.
double LinspaceTimestep(int train_timesteps, int steps, int i);
// Whether some linspace timestep has a fraction as float32 (Euler ancestral
// then needs a model that takes float timesteps): unless steps - 1 divides
// train_timesteps - 1.
bool LinspaceHasFractions(int train_timesteps, int steps);
// Why `model`, whose timesteps are whole (timestep_dtype "long"), cannot run
// Euler ancestral at linspace spacing with `steps` steps, for the caller to
// put after its field's name; it names the step counts that can (1 and those
// where steps - 1 divides train_timesteps - 1, the first 12).
std::string LinspaceFractionsProblem(const std::string& model, int train_timesteps, int steps);

// Requires 1 <= steps <= train_timesteps. Values are clamped to
// [0, train_timesteps - 1].
std::vector<int> DdimTimesteps(int train_timesteps, int steps, Spacing spacing, int steps_offset);

// Why these timesteps cannot be sampled, or "" when they can (a sentence for
// the caller to put after its field's name): leading spacing
// whose steps_offset pushes the first timestep past the schedule's end (1000
// steps with offset 1 would run timestep 999 twice; diffusers would index past
// its table).
std::string TimestepsProblem(int train_timesteps, int steps, Spacing spacing, int steps_offset);

// The timestep DDIM steps to from `t`: DDIMScheduler.step's t - train //
// steps, below 0 meaning the schedule's final alpha.
inline int DdimPreviousTimestep(int t, int train_timesteps, int steps) {
  return t - train_timesteps / steps;
}

// Whether DDIM's last step, from `last_timestep`, adds noise at eta > 0. It
// steps to alpha-bar at DdimPreviousTimestep, which adds noise; or, below
// 0, to the final alpha: 1 with set_alpha_to_one, which adds none, else
// alpha-bar[0], which adds none from timestep 0 itself (leading spacing with
// steps_offset 0). Trailing spacing at 7 of 1000 steps ends at 142, whose
// previous timestep is 0: noise even with set_alpha_to_one.
bool DdimLastStepAddsNoise(int last_timestep, int train_timesteps, int steps,
                           bool set_alpha_to_one);

// alphas_cumprod over the training timesteps, as diffusers computes them.
std::vector<double> AlphasCumprod(const NoiseScheduleSpec& spec);

}  // namespace dgrid

#endif  // DGRID_COMMON_TIMESTEPS_H_
