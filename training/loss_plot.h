// The training loss curve, as CSV (for tools) and as a PNG line plot (for
// people), drawn with Cairo. Torch-free.
//
//   std::vector<LossPoint> curve = ...;  // one point per logging interval
//   absl::Status s = WriteLossCsv(curve, dir + "/loss.csv");
//   s = WriteLossPlot(curve, "dgrid-train diffusion", dir + "/loss.png");
#ifndef DGRID_TRAINING_LOSS_PLOT_H_
#define DGRID_TRAINING_LOSS_PLOT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dgrid::training {

struct LossPoint {
  int64_t step = 0;       // optimizer steps done
  double epoch = 0;       // fractional epoch
  double loss = 0;        // mean training loss over the interval
  double images_per_s = 0;
  double lr = 0;
};

absl::Status WriteLossCsv(const std::vector<LossPoint>& curve, const std::string& path);

// Reads back what WriteLossCsv wrote, so a resumed run keeps its history.
absl::StatusOr<std::vector<LossPoint>> ReadLossCsv(const std::string& path);

// Loss against step on a log scale: the raw points, and a moving average
// that shows the trend through the noise of single intervals.
absl::Status WriteLossPlot(const std::vector<LossPoint>& curve, const std::string& title,
                           const std::string& path);

}  // namespace dgrid::training

#endif  // DGRID_TRAINING_LOSS_PLOT_H_
