// The timestep that each DDIM step runs, for diffusers' "leading" and
// "trailing" spacings. The engine samples with it and the orchestrator labels
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

// Requires 1 <= steps <= train_timesteps. Values are clamped to
// [0, train_timesteps - 1].
std::vector<int> DdimTimesteps(int train_timesteps, int steps, Spacing spacing, int steps_offset);

// Why these timesteps cannot be sampled, or "" when they can (a sentence for
// the caller to put after its field's name): leading spacing
// whose steps_offset pushes the first timestep past the schedule's end (1000
// steps with offset 1 would run timestep 999 twice; diffusers would index past
// its table).
std::string TimestepsProblem(int train_timesteps, int steps, Spacing spacing, int steps_offset);

// alphas_cumprod over the training timesteps, as diffusers computes them.
std::vector<double> AlphasCumprod(const NoiseScheduleSpec& spec);

}  // namespace dgrid

#endif  // DGRID_COMMON_TIMESTEPS_H_
