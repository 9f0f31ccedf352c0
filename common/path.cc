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

const SegmentConditioning* Path::ConditioningAt(int step) const {
  const SegmentConditioning* conditioning = nullptr;
  for (const Segment& segment : segments) {
    if (segment.from_step > step) break;
    if (segment.conditioning) conditioning = &*segment.conditioning;
  }
  return conditioning;
}

Path Path::BranchAt(int step, uint64_t noise_seed,
                    std::optional<SegmentConditioning> conditioning) const {
  const absl::Span<const Segment> prefix = SegmentsBelow(step);
  Path branch{init_seed, {prefix.begin(), prefix.end()}};
  const bool switched = conditioning.has_value();
  branch.segments.push_back({step, noise_seed, std::move(conditioning)});
  if (switched) return branch;
  // No switch of its own: the branch keeps this path's prompt switches from
  // `step` on, under its own noise, and differs from it by the noise alone.
  for (const Segment& s : segments) {
    if (s.from_step < step || !s.conditioning) continue;
    if (s.from_step == step) {
      branch.segments.back().conditioning = s.conditioning;
    } else {
      branch.segments.push_back({s.from_step, noise_seed, s.conditioning});
    }
  }
  return branch;
}

Path Path::SwitchedAt(int step, SegmentConditioning conditioning) const {
  Path out = *this;
  auto it = out.segments.begin();
  while (it != out.segments.end() && it->from_step < step) ++it;
  if (it == out.segments.end() || it->from_step != step) {
    it = out.segments.insert(it, Segment{step, NoiseSeedAt(step), std::nullopt});
  }
  it->conditioning = std::move(conditioning);
  for (++it; it != out.segments.end(); ++it) it->conditioning.reset();
  return out;
}

bool Path::SharesPrefixWith(const Path& other, int step) const {
  if (init_seed != other.init_seed) return false;
  for (int i = 0; i < step; ++i) {
    if (NoiseSeedAt(i) != other.NoiseSeedAt(i)) return false;
    const SegmentConditioning* mine = ConditioningAt(i);
    const SegmentConditioning* theirs = other.ConditioningAt(i);
    if ((mine == nullptr) != (theirs == nullptr) || (mine && *mine != *theirs)) return false;
  }
  return true;
}

Path Path::Canonical(const SegmentConditioning& request) const {
  Path out{init_seed, {}};
  const SegmentConditioning* inherited = &request;
  for (const Segment& segment : segments) {
    Segment kept = segment;
    if (kept.conditioning && *kept.conditioning == *inherited) kept.conditioning.reset();
    // Noise depends only on the seed and the step: a segment that keeps the
    // previous one's seed and sets nothing new continues it.
    if (!out.segments.empty() && !kept.conditioning &&
        kept.noise_seed == out.segments.back().noise_seed) {
      continue;
    }
    if (kept.conditioning) inherited = &*segment.conditioning;
    out.segments.push_back(std::move(kept));
  }
  return out;
}

std::string Path::DebugString() const {
  return absl::StrCat(
      "{init_seed=", init_seed, " segments=[",
      absl::StrJoin(segments, ", ",
                    [](std::string* out, const Segment& s) {
                      absl::StrAppend(out, "(", s.from_step, ",", s.noise_seed);
                      if (s.conditioning) {
                        absl::StrAppend(out, ",prompt=", s.conditioning->prompt.size(), "B");
                        if (s.conditioning->class_index >= 0) {
                          absl::StrAppend(out, ",class=", s.conditioning->class_index);
                        }
                      }
                      absl::StrAppend(out, ")");
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
          absl::StrCat(field, " must be below the steps (", steps, "), got ", from));
    }
  }
  return absl::OkStatus();
}

}  // namespace dgrid
