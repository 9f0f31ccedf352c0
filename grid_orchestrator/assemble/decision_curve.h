// Decision curves: from the judged grids of N trunks of one request, per row
// (branch step) and per judge head, how often a branch ends with a label
// other than its trunk's, and the step where that has fallen to half its
// row-0 value. Sclocchi, Favero & Wyart (PNAS 2025) measure the class this
// way: kept up to a noise level, then lost sharply.
//
// The statistics are over trunks, not cells: a trunk's branches share its
// latent up to the branch step and are not independent. For each trunk the
// row's value is the fraction of its branches that differ; the curve is the
// mean of those fractions and its standard error across trunks. The half
// step's uncertainty comes from a bootstrap over trunks.
//
//   CurveObservations obs;
//   obs.branch_steps = {0, 5, 10, 20, 30, 40};
//   obs.heads = 1;
//   TrunkObservation& t = obs.trunks.emplace_back();
//   t.trunk_labels = {7};                       // the trunk's final: "sneaker"
//   t.branch_labels = {{{7}, {5}, {7}, {7}}, ...};  // [row][column][head]
//   t.divergence = {...};                       // GridRow.divergence, per row
//   t.divergence_to_trunk = {...};
//   CurveStatistics s = ComputeDecisionCurve(obs);
//   s.heads[0].p_differs[2].mean;               // row 2
//   s.heads[0].half_step.value;                 // e.g. 13.5
//
// Pure: no I/O, no threads, protobuf- and torch-free.
#ifndef DGRID_GRID_ORCHESTRATOR_ASSEMBLE_DECISION_CURVE_H_
#define DGRID_GRID_ORCHESTRATOR_ASSEMBLE_DECISION_CURVE_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace dgrid {

// What one trunk's grid gave.
struct TrunkObservation {
  // The judge's label of the trunk's final image, per head.
  std::vector<int> trunk_labels;
  // [row][column][head]: the label of each branch's final image.
  std::vector<std::vector<std::vector<int>>> branch_labels;
  // Per row, as the grid reports them: mean pairwise RMS distance among the
  // row's branches, and their mean distance to the trunk's final.
  std::vector<double> divergence;
  std::vector<double> divergence_to_trunk;
};

struct CurveObservations {
  // Per row, ascending.
  std::vector<int> branch_steps;
  // Judge heads; 0 for a bundle without a judge (divergence only).
  int heads = 0;
  std::vector<TrunkObservation> trunks;
};

// A mean over trunks and its standard error (sample standard deviation over
// sqrt(N)).
struct Estimate {
  double mean = 0;
  double standard_error = 0;
};

// Where a head's curve falls to half its row-0 value.
struct HalfStep {
  // False when row 0's value is 0 (nothing to fall from) or the curve stays
  // above half at every row.
  bool found = false;
  // Linear interpolation between the branch steps of the two rows around the
  // crossing.
  double value = 0;
  // Over bootstrap resamples of the trunks. `lo` and `hi` are the 16th and
  // 84th percentiles (a 68% interval) of the resamples' half steps, where a
  // resample whose curve stays above half through the last row counts as
  // halving after it (right-censored: later, not missing) and one whose row
  // 0 is 0 counts in neither. When the 84th percentile is such a late
  // resample, `hi_after_last_row` is set and `hi` is the last row's step:
  // the interval runs on past it (and `lo` is the last row's step too when
  // the 16th percentile is late). `standard_error` is the values' standard
  // deviation over the resamples that found one, and 0 when the interval runs
  // past the last row, where it would leave the late ones out.
  // `found_fraction`: the share of resamples that found one.
  double standard_error = 0;
  double lo = 0;
  double hi = 0;
  double found_fraction = 0;
  bool hi_after_last_row = false;
};

// A 95% interval for a probability.
struct Interval {
  double lo = 0;
  double hi = 0;
};

struct HeadCurveStatistics {
  // Per row: P(a branch's label differs from its trunk's).
  std::vector<Estimate> p_differs;
  // Per row: a 95% interval for it that holds at 0 and 1 too, where the
  // standard error is 0 (all trunks agree): Wilson's score interval with the
  // trunks as the sample. A trunk's fraction lies in [0, 1], so its variance
  // is at most p(1 - p), and the interval is conservative.
  std::vector<Interval> p_differs_95;
  HalfStep half_step;
};

struct CurveStatistics {
  int trunks = 0;
  std::vector<HeadCurveStatistics> heads;
  // Per row: the mean over trunks of the grid's divergence numbers.
  std::vector<Estimate> divergence;
  std::vector<Estimate> divergence_to_trunk;
};

struct CurveOptions {
  int bootstrap_resamples = 1000;
  uint64_t bootstrap_seed = 1;
};

// INVALID_ARGUMENT when the observations disagree in shape (a trunk with
// another row or head count, a row without branches, fewer than 2 trunks,
// branch steps not ascending), naming the trunk and row.
absl::StatusOr<CurveStatistics> ComputeDecisionCurve(const CurveObservations& observations,
                                                     const CurveOptions& options = {});

// Wilson's 95% score interval for a proportion `p` observed over `n` units.
Interval WilsonInterval(double p, int n);

// The step where `curve` (one value per row at `branch_steps`) first falls to
// half of curve[0], linearly interpolated; nullopt-like found=false when it
// never does or curve[0] is 0. Only `found` and `value` are set.
HalfStep HalfStepOf(const std::vector<int>& branch_steps, const std::vector<double>& curve);

}  // namespace dgrid

#endif  // DGRID_GRID_ORCHESTRATOR_ASSEMBLE_DECISION_CURVE_H_
