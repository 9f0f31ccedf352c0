// The evaluation's outputs for people and tools: one JSON object (built as a
// google.protobuf.Struct and printed with protobuf's JSON mapping) and a
// short text summary. Torch-free: this side may include *.pb.h.
//
//   absl::StatusOr<std::string> json = EvalReportJson(result);
//   absl::Status s = WriteTextFile(out_dir + "/eval.json", *json);
#ifndef DGRID_TRAINING_EVAL_REPORT_H_
#define DGRID_TRAINING_EVAL_REPORT_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "evaluation.h"

namespace dgrid::training {

// Conditional accuracy at the default guidance that the bundle must reach.
inline constexpr double kAccuracyTarget = 0.85;

// Also copies the `training` block of the bundle's manifest.json (epochs,
// final loss, command), so that the numbers name the weights they measured.
absl::StatusOr<std::string> EvalReportJson(const EvalResult& result);

std::string EvalReportText(const EvalResult& result);

absl::Status WriteTextFile(const std::string& path, const std::string& text);

}  // namespace dgrid::training

#endif  // DGRID_TRAINING_EVAL_REPORT_H_
