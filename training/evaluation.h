// Measures a model bundle's sample quality through the real engine
// (TrajectoryBatcher, the bundle's DDIM sampler) and the bundle's own
// classifier: conditional accuracy, Fréchet distance in the classifier's
// features against the test split (next to the real-vs-real floor), both by
// guidance scale, and the speciation curve — how likely a branch taken at step
// k ends in another class than its trunk.
//
//   EvalOptions o;
//   o.bundle_dir = "models/fashion-mnist";
//   absl::StatusOr<EvalResult> r = RunEvaluation(o);   // progress on stderr
//   if (r.ok()) std::cout << EvalReportJson(*r);         // eval_report.h
//
// Torch- and protobuf-free header: the report side (protobuf JSON, Cairo)
// includes it.
#ifndef DGRID_TRAINING_EVALUATION_H_
#define DGRID_TRAINING_EVALUATION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace dgrid::training {

inline constexpr char kEvalDataDir[] = "/usr/share/datasets/fashion-mnist";

struct EvalOptions {
  std::string bundle_dir;
  std::string data_dir = kEvalDataDir;
  // Samples per class at every guidance scale (the same seeds at each scale,
  // so scales differ only by guidance).
  int per_class = 100;
  // Scales to measure; the manifest's default scale is always added.
  std::vector<float> guidance = {0, 1, 2, 4};
  int trunks = 200;
  int branches = 4;
  // Branch steps are 0, branch_every, 2 branch_every, ... below steps.
  int branch_every = 5;
  // 0: the manifest's default step count.
  int steps = 0;
  int threads = 2;
  int max_batch = 64;
  // Real images per split: the test images for the reference statistics and
  // the train images of the real-vs-real floor. 0: the whole test split and
  // as many train images.
  int64_t real_images = 0;
  uint64_t seed = 1;
  // If set, a PNG grid of default-guidance samples goes there: one row per
  // class, the first 10 samples of each, so a reader can see what was scored.
  std::string samples_png;
};

struct GuidanceEval {
  float guidance = 0;
  int samples = 0;
  // False at guidance 0: the engine then runs the null label only, so the
  // requested class cannot matter and `accuracy` is chance level.
  bool label_used = true;
  // Fraction of samples that the classifier assigns to the requested class.
  double accuracy = 0;
  std::vector<double> per_class_accuracy;
  std::vector<int> predicted_histogram;
  // Entropy of predicted_histogram; log2(10) = 3.32 bits when every class
  // is as frequent.
  double predicted_entropy_bits = 0;
  double frechet_distance = 0;
  double seconds = 0;
  int64_t image_forwards = 0;
};

struct SpeciationPoint {
  int step = 0;
  int timestep = 0;
  int pairs = 0;  // trunk-branch pairs
  // P(branch class != trunk class), the mean over trunks of each trunk's
  // fraction of changed branches.
  double p_change = 0;
  // Standard error over trunks (branches of one trunk are correlated, so the
  // trunk is the independent unit), and a 95% bootstrap interval over trunks.
  double standard_error = 0;
  double ci95_lo = 0;
  double ci95_hi = 0;
};

struct SpeciationEval {
  int trunks = 0;
  int branches = 0;
  int steps = 0;
  std::vector<SpeciationPoint> points;
  // 1 - sum_c q_c^2 over the trunks' class frequencies q: P(change) if a
  // branch were an independent sample.
  double p_change_independent = 0;
  // First branch step whose p_change is at most half of that at step 0
  // (linear interpolation), -1 if none.
  double half_step = -1;
  std::vector<int> trunk_histogram;
  double seconds = 0;
  int64_t image_forwards = 0;
};

struct EvalResult {
  std::string bundle_dir;
  std::string model_name;
  std::vector<std::string> class_labels;
  int steps = 0;
  float eta = 0;
  std::string spacing;
  float default_guidance = 0;

  std::string classifier_path;
  int feature_dim = 0;
  // The classifier on the real test images, as a check of the scorer.
  double classifier_test_accuracy = 0;
  int64_t test_images = 0;
  // Real-vs-real floors: train images vs the test images, with as many
  // train images as real_images, and with as many as one guidance scale's
  // samples (Fréchet distance is biased upward at small sample counts, so
  // the matched floor is the fair comparison).
  int64_t floor_train_images = 0;
  double floor_frechet = 0;
  int64_t matched_floor_train_images = 0;
  double matched_floor_frechet = 0;

  std::vector<GuidanceEval> by_guidance;  // ascending guidance
  SpeciationEval speciation;
  // Set by the caller that draws the speciation plot (speciation_plot.h).
  std::string plot_path;

  // Machine and timing.
  std::string host;
  std::string cpu;
  int logical_cores = 0;
  int torch_threads = 0;
  std::string device;
  int max_batch = 0;
  double real_seconds = 0;
  double total_seconds = 0;
  int64_t image_forwards = 0;

  // The entry at default_guidance.
  const GuidanceEval& at_default() const;
};

absl::StatusOr<EvalResult> RunEvaluation(const EvalOptions& options);

}  // namespace dgrid::training

#endif  // DGRID_TRAINING_EVALUATION_H_
