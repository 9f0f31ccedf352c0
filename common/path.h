// A trajectory's name (docs/ARCHITECTURE.md, "A trajectory is a path"): the
// initial latent comes from init_seed, and the noise injected at step i from
// the segment whose range holds i, keyed by (noise_seed, i). The trunk is
// {s, [(0, a)]}; a branch at step k is {s, [(0, a), (k, b)]}.
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
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace dgrid {

struct Segment {
  int from_step = 0;
  uint64_t noise_seed = 0;
  bool operator==(const Segment& o) const {
    return from_step == o.from_step && noise_seed == o.noise_seed;
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
  // This path up to `step`, then `noise_seed` from `step` on. Segments that
  // start at or after `step` are dropped.
  Path BranchAt(int step, uint64_t noise_seed) const;
  // True when both paths inject the same noise at every step below `step`
  // and start from the same latent.
  bool SharesPrefixWith(const Path& other, int step) const;
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
