// Draws the speciation curve with Cairo: P(branch class != trunk class)
// against the branch step (timestep below each step), with 95% bootstrap
// intervals and the level independent samples would reach. Torch-free.
//
//   absl::Status s = WriteSpeciationPlot(result, out_dir + "/speciation.png");
#ifndef DGRID_TRAINING_SPECIATION_PLOT_H_
#define DGRID_TRAINING_SPECIATION_PLOT_H_

#include <string>

#include "absl/status/status.h"
#include "evaluation.h"

namespace dgrid::training {

absl::Status WriteSpeciationPlot(const EvalResult& result, const std::string& path);

}  // namespace dgrid::training

#endif  // DGRID_TRAINING_SPECIATION_PLOT_H_
