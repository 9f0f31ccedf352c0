// A trajectory's name (docs/ARCHITECTURE.md, "A trajectory is a path"): the
// initial latent comes from init_seed, and the noise injected at step i from
// the segment whose range holds i, keyed by (noise_seed, i). The trunk is
// {s, [(0, a)]}; a branch at step k is {s, [(0, a), (k, b)]}. A segment may
// also change what the trajectory is conditioned on (a prompt switch).
//
//   Path trunk{7, {{0, 100}}};
//   Path branch = trunk.BranchAt(10, 555);
//   branch.NoiseSeedAt(9);   // 100: shared with the trunk
//   branch.NoiseSeedAt(10);  // 555
//
// Protobuf-free: the engine includes it.
#ifndef DGRID_COMMON_PATH_H_
#define DGRID_COMMON_PATH_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace dgrid {

// What a trajectory is conditioned on from a segment on: a text model's
// prompt and negative prompt, or a class model's class (by index, or by name
// in `prompt`; -1 and "" for unconditional).
struct SegmentConditioning {
  std::string prompt;
  std::string negative_prompt;
  int class_index = -1;
  bool operator==(const SegmentConditioning& o) const {
    return prompt == o.prompt && negative_prompt == o.negative_prompt &&
           class_index == o.class_index;
  }
  bool operator!=(const SegmentConditioning& o) const { return !(*this == o); }
};

struct Segment {
  int from_step = 0;
  uint64_t noise_seed = 0;
  // Set when the conditioning changes here; else the segment inherits the
  // one before it (the first, the request's).
  std::optional<SegmentConditioning> conditioning;
  bool operator==(const Segment& o) const {
    return from_step == o.from_step && noise_seed == o.noise_seed &&
           conditioning == o.conditioning;
  }
};

struct Path {
  uint64_t init_seed = 0;
  std::vector<Segment> segments;

  // The seed of the segment whose range holds `step`. Requires a valid path.
  uint64_t NoiseSeedAt(int step) const;
  // The segments that start below `step`: with init_seed, all that the
  // latent at `step` depends on. The planner's branch seeds, BranchAt and the
  // prefix cache's keys all use this one rule, so they cannot disagree.
  absl::Span<const Segment> SegmentsBelow(int step) const;
  // The conditioning set by the last segment at or below `step` that sets
  // one; nullptr: the request's.
  const SegmentConditioning* ConditioningAt(int step) const;
  // This path up to `step`, then `noise_seed` from `step` on: conditioned on
  // `conditioning` from there to the end when given, else on this path's own
  // prompt switches (a branch of a promoted switched trunk switches as the
  // trunk does). The noise of segments at or after `step` is dropped.
  Path BranchAt(int step, uint64_t noise_seed,
                std::optional<SegmentConditioning> conditioning = std::nullopt) const;
  // This path with the same noise throughout, conditioned on `conditioning`
  // from `step` to the end: later segments keep their noise seeds and drop
  // their own conditioning (a switch row of a promoted switched trunk is the
  // switch prompt's from its step on, as the row says).
  Path SwitchedAt(int step, SegmentConditioning conditioning) const;
  // True when both paths start from the same latent and inject the same
  // noise under the same conditioning at every step below `step`.
  bool SharesPrefixWith(const Path& other, int step) const;
  // The same trajectory with each conditioning that equals the one it would
  // inherit (from `request`, the request's) left out, and each segment that
  // then only repeats the previous one's noise seed merged into it: one name
  // per trajectory, so that equal trajectories share cache entries.
  Path Canonical(const SegmentConditioning& request) const;
  std::string DebugString() const;

  bool operator==(const Path& o) const {
    return init_seed == o.init_seed && segments == o.segments;
  }
  bool operator!=(const Path& o) const { return !(*this == o); }
};

// OK when the path has at least one segment, the first starts at 0, from_step
// strictly increases and every from_step is below `steps`. Errors name the
// field as `field_prefix.segments[i].from_step`.
absl::Status ValidatePath(const Path& path, int steps, const std::string& field_prefix);

}  // namespace dgrid

#endif  // DGRID_COMMON_PATH_H_
