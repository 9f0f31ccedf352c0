#include "grid_orchestrator/assemble/decision_curve.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"

namespace dgrid {
namespace {

Estimate MeanAndStandardError(const std::vector<double>& values) {
  Estimate e;
  const double n = static_cast<double>(values.size());
  if (values.empty()) return e;
  for (double v : values) e.mean += v;
  e.mean /= n;
  if (values.size() < 2) return e;
  double squares = 0;
  for (double v : values) squares += (v - e.mean) * (v - e.mean);
  e.standard_error = std::sqrt(squares / (n - 1) / n);
  return e;
}

absl::Status CheckShapes(const CurveObservations& o) {
  const size_t rows = o.branch_steps.size();
  if (rows == 0) return absl::InvalidArgumentError("curve: no rows");
  for (size_t r = 1; r < rows; ++r) {
    if (o.branch_steps[r] <= o.branch_steps[r - 1]) {
      return absl::InvalidArgumentError("curve: branch steps must ascend");
    }
  }
  if (o.trunks.size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("curve: needs at least 2 trunks for a standard error, got ",
                     o.trunks.size()));
  }
  for (size_t t = 0; t < o.trunks.size(); ++t) {
    const TrunkObservation& trunk = o.trunks[t];
    const std::string where = absl::StrCat("curve: trunk ", t);
    if (trunk.divergence.size() != rows || trunk.divergence_to_trunk.size() != rows) {
      return absl::InvalidArgumentError(absl::StrCat(where, " has divergence for ",
                                                     trunk.divergence.size(), " rows, not ",
                                                     rows));
    }
    if (o.heads == 0) continue;
    if (trunk.trunk_labels.size() != static_cast<size_t>(o.heads) ||
        trunk.branch_labels.size() != rows) {
      return absl::InvalidArgumentError(absl::StrCat(where, " has labels of another shape"));
    }
    for (size_t r = 0; r < rows; ++r) {
      if (trunk.branch_labels[r].empty()) {
        return absl::InvalidArgumentError(absl::StrCat(where, " row ", r, " has no branches"));
      }
      for (const std::vector<int>& cell : trunk.branch_labels[r]) {
        if (cell.size() != static_cast<size_t>(o.heads)) {
          return absl::InvalidArgumentError(
              absl::StrCat(where, " row ", r, " has a cell without one label per head"));
        }
      }
    }
  }
  return absl::OkStatus();
}

// [head][row][trunk]: the fraction of the trunk's branches in that row whose
// label differs from the trunk's.
std::vector<std::vector<std::vector<double>>> DifferingFractions(const CurveObservations& o) {
  const size_t rows = o.branch_steps.size();
  std::vector<std::vector<std::vector<double>>> f(
      o.heads, std::vector<std::vector<double>>(rows, std::vector<double>(o.trunks.size())));
  for (size_t t = 0; t < o.trunks.size(); ++t) {
    const TrunkObservation& trunk = o.trunks[t];
    for (int h = 0; h < o.heads; ++h) {
      for (size_t r = 0; r < rows; ++r) {
        const auto& cells = trunk.branch_labels[r];
        int differ = 0;
        for (const std::vector<int>& cell : cells) differ += cell[h] != trunk.trunk_labels[h];
        f[h][r][t] = static_cast<double>(differ) / cells.size();
      }
    }
  }
  return f;
}

// An index in [0, n) from the generator, by Lemire's multiply-and-reject
// method as libstdc++'s uniform_int_distribution draws it from a 64-bit
// generator: the same picks there as before, and now the same under libc++
// too (the standard fixes mt19937_64's outputs, not how a distribution maps
// them, and libc++ maps them otherwise), so a curve's bootstrap figures do not
// depend on the standard library the orchestrator was built with.
size_t UniformIndex(std::mt19937_64& rng, size_t n) {
  const uint64_t range = n;
  unsigned __int128 product = static_cast<unsigned __int128>(rng()) * range;
  uint64_t low = static_cast<uint64_t>(product);
  if (low < range) {
    const uint64_t threshold = -range % range;
    while (low < threshold) {
      product = static_cast<unsigned __int128>(rng()) * range;
      low = static_cast<uint64_t>(product);
    }
  }
  return static_cast<size_t>(product >> 64);
}

// The half step's spread over resamples of the trunks (with replacement).
void BootstrapHalfStep(const std::vector<int>& branch_steps,
                       const std::vector<std::vector<double>>& fractions,
                       const CurveOptions& options, HalfStep* half) {
  const size_t trunks = fractions[0].size();
  const size_t rows = fractions.size();
  std::mt19937_64 rng(options.bootstrap_seed);
  std::vector<double> found;
  size_t late = 0;  // resamples still above half at the last row
  std::vector<double> curve(rows);
  std::vector<size_t> sample(trunks);
  for (int b = 0; b < options.bootstrap_resamples; ++b) {
    for (size_t& s : sample) s = UniformIndex(rng, trunks);
    for (size_t r = 0; r < rows; ++r) {
      double sum = 0;
      for (size_t s : sample) sum += fractions[r][s];
      curve[r] = sum / trunks;
    }
    const HalfStep h = HalfStepOf(branch_steps, curve);
    if (h.found) {
      found.push_back(h.value);
    } else if (curve[0] > 0) {
      ++late;
    }
  }
  if (options.bootstrap_resamples > 0) {
    half->found_fraction = static_cast<double>(found.size()) / options.bootstrap_resamples;
  }
  const size_t counted = found.size() + late;
  if (counted == 0) return;
  // Percentiles over the found values with the late resamples above them
  // all: a percentile that reaches into the late ones lies past the last row.
  std::sort(found.begin(), found.end());
  const double last_step = branch_steps.back();
  auto percentile = [&](double q, bool* past) {
    const double at = q * (counted - 1);
    const size_t below = static_cast<size_t>(std::floor(at));
    const double along = at - below;
    // Interpolating toward a late resample lands past the last row too.
    *past = below >= found.size() || (along > 0 && below + 1 >= found.size());
    if (*past) return last_step;
    return along > 0 ? found[below] + along * (found[below + 1] - found[below]) : found[below];
  };
  bool lo_past = false;  // then hi is past as well
  half->lo = percentile(0.16, &lo_past);
  half->hi = percentile(0.84, &half->hi_after_last_row);
  if (half->hi_after_last_row) return;
  Estimate spread = MeanAndStandardError(found);
  half->standard_error = spread.standard_error * std::sqrt(static_cast<double>(found.size()));
}

}  // namespace

Interval WilsonInterval(double p, int n) {
  if (n <= 0) return {0, 1};
  constexpr double z = 1.959963984540054;  // the normal's 97.5th percentile
  const double z2n = z * z / n;
  const double centre = (p + z2n / 2) / (1 + z2n);
  const double half = z / (1 + z2n) * std::sqrt(p * (1 - p) / n + z2n / (4 * n));
  // The ends in [0, 1] and around p itself: rounding put p = 1's upper end
  // at 0.9999999999999999 for some n.
  return {std::clamp(centre - half, 0.0, p), std::clamp(centre + half, p, 1.0)};
}

HalfStep HalfStepOf(const std::vector<int>& branch_steps, const std::vector<double>& curve) {
  HalfStep h;
  // One step per row (ComputeDecisionCurve checks the shapes; a direct
  // caller may not have).
  if (curve.empty() || branch_steps.size() != curve.size() || !(curve[0] > 0)) return h;
  const double target = curve[0] / 2;
  for (size_t r = 1; r < curve.size(); ++r) {
    if (curve[r] > target) continue;
    const double drop = curve[r - 1] - curve[r];
    const double along = drop > 0 ? (curve[r - 1] - target) / drop : 1.0;
    h.found = true;
    h.value = branch_steps[r - 1] + along * (branch_steps[r] - branch_steps[r - 1]);
    return h;
  }
  return h;
}

absl::StatusOr<CurveStatistics> ComputeDecisionCurve(const CurveObservations& o,
                                                     const CurveOptions& options) {
  if (absl::Status s = CheckShapes(o); !s.ok()) return s;
  const size_t rows = o.branch_steps.size();
  CurveStatistics out;
  out.trunks = static_cast<int>(o.trunks.size());
  for (size_t r = 0; r < rows; ++r) {
    std::vector<double> pairwise, to_trunk;
    for (const TrunkObservation& t : o.trunks) {
      pairwise.push_back(t.divergence[r]);
      to_trunk.push_back(t.divergence_to_trunk[r]);
    }
    out.divergence.push_back(MeanAndStandardError(pairwise));
    out.divergence_to_trunk.push_back(MeanAndStandardError(to_trunk));
  }
  const auto fractions = DifferingFractions(o);
  for (int h = 0; h < o.heads; ++h) {
    HeadCurveStatistics& head = out.heads.emplace_back();
    std::vector<double> means;
    for (size_t r = 0; r < rows; ++r) {
      head.p_differs.push_back(MeanAndStandardError(fractions[h][r]));
      means.push_back(head.p_differs.back().mean);
      head.p_differs_95.push_back(WilsonInterval(means.back(), out.trunks));
    }
    head.half_step = HalfStepOf(o.branch_steps, means);
    BootstrapHalfStep(o.branch_steps, fractions[h], options, &head.half_step);
  }
  return out;
}

}  // namespace dgrid
