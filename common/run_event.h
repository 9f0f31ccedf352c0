// What a run of trajectories reports as it goes: a capture (the latent at a
// step the caller asked for) or a final. The engine produces them, the
// Branch adapter puts them on the wire (common/wire.h). Protobuf-free.
#ifndef DGRID_COMMON_RUN_EVENT_H_
#define DGRID_COMMON_RUN_EVENT_H_

#include <cstdint>
#include <vector>

namespace dgrid {

struct RunEvent {
  enum class Kind { kCapture, kFinal };
  Kind kind = Kind::kFinal;
  int trajectory = 0;
  // The latent is the one at `step`; timestep is the one that step runs
  // (for a final at the end of sampling, the last timestep run).
  int step = 0;
  int timestep = 0;
  std::vector<float> latent;
  // The x0 predicted by the step that produced `latent` (when previews;
  // empty for a capture at the start step, which no step produced).
  std::vector<float> x0;
  int model_evals = 0;
  // When the run asked for decode: the latent's and the x0's image, 8-bit
  // [H, W, C] (x0_pixels empty when x0 is).
  std::vector<uint8_t> pixels;
  std::vector<uint8_t> x0_pixels;
};

}  // namespace dgrid

#endif  // DGRID_COMMON_RUN_EVENT_H_
