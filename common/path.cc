#include "common/path.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace dgrid {

uint64_t Path::NoiseSeedAt(int step) const {
  uint64_t seed = segments.empty() ? 0 : segments.front().noise_seed;
  for (const Segment& segment : segments) {
    if (segment.from_step > step) break;
    seed = segment.noise_seed;
  }
  return seed;
}

absl::Span<const Segment> Path::SegmentsBelow(int step) const {
  size_t n = 0;
  while (n < segments.size() && segments[n].from_step < step) ++n;
  return absl::MakeConstSpan(segments.data(), n);
}

Path Path::BranchAt(int step, uint64_t noise_seed) const {
  const absl::Span<const Segment> prefix = SegmentsBelow(step);
  Path branch{init_seed, {prefix.begin(), prefix.end()}};
  branch.segments.push_back({step, noise_seed});
  return branch;
}

bool Path::SharesPrefixWith(const Path& other, int step) const {
  if (init_seed != other.init_seed) return false;
  for (int i = 0; i < step; ++i) {
    if (NoiseSeedAt(i) != other.NoiseSeedAt(i)) return false;
  }
  return true;
}

std::string Path::DebugString() const {
  return absl::StrCat(
      "{init_seed=", init_seed, " segments=[",
      absl::StrJoin(segments, ", ",
                    [](std::string* out, const Segment& s) {
                      absl::StrAppend(out, "(", s.from_step, ",", s.noise_seed, ")");
                    }),
      "]}");
}

absl::Status ValidatePath(const Path& path, int steps, const std::string& field_prefix) {
  if (path.segments.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field_prefix, ".segments: a path needs at least one segment"));
  }
  for (size_t i = 0; i < path.segments.size(); ++i) {
    const int from = path.segments[i].from_step;
    const std::string field = absl::StrCat(field_prefix, ".segments[", i, "].from_step");
    if (i == 0 && from != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, " must be 0 (the first segment starts at step 0), got ", from));
    }
    if (i > 0 && from <= path.segments[i - 1].from_step) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, " must be greater than the previous segment's (",
          path.segments[i - 1].from_step, "): segments must be sorted and distinct, got ", from));
    }
    if (from >= steps) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, " must be below sampler.steps (", steps, "), got ", from));
    }
  }
  return absl::OkStatus();
}

}  // namespace dgrid
