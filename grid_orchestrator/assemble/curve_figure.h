// The decision-curve figure: per judge head, P(a branch's label differs from
// its trunk's) against the branch step with ±1 standard-error bars and the
// half step marked; below, the mean RMS divergence per row (the only panel
// for a bundle without a judge). Drawn with Cairo into a PNG, or the same
// figure as an SVG (vector, for papers and slides).
//
//   CurveFigure figure;
//   figure.title = "fashion-mnist · unprompted · 100 trunks";
//   figure.branch_steps = {0, 5, 10, 20, 30, 40};
//   figure.head_names = {"class"};
//   figure.statistics = ComputeDecisionCurve(observations).value();
//   ASSIGN_OR_RETURN(std::string png, DrawCurvePng(figure));
//
// Protobuf-free and torch-free, like the grid figure.
#ifndef DGRID_GRID_ORCHESTRATOR_ASSEMBLE_CURVE_FIGURE_H_
#define DGRID_GRID_ORCHESTRATOR_ASSEMBLE_CURVE_FIGURE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grid_orchestrator/assemble/decision_curve.h"

namespace dgrid {

struct CurveFigure {
  std::string title;
  std::string subtitle;
  std::vector<int> branch_steps;
  // Branches per row. With one there is no pair: the divergence panel shows
  // the distance to the trunk alone.
  int branches = 2;
  // One per statistics.heads, in order.
  std::vector<std::string> head_names;
  CurveStatistics statistics;
};

// INVALID_ARGUMENT when the statistics do not match the branch steps or the
// head names.
absl::StatusOr<std::string> DrawCurvePng(const CurveFigure& figure);

// The same figure as an SVG document of the PNG's size in pixels. The text is
// drawn as glyph outlines, so the file needs no fonts where it is shown.
absl::StatusOr<std::string> DrawCurveSvg(const CurveFigure& figure);

}  // namespace dgrid

#endif  // DGRID_GRID_ORCHESTRATOR_ASSEMBLE_CURVE_FIGURE_H_
