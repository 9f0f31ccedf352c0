// Trains the bundle's evaluation classifier: a small CNN on Fashion-MNIST
// that dgrid-eval uses to score samples (accuracy on the requested class,
// Fréchet distance in its features). Saved as TorchScript
// `<out_dir>/classifier.pt` with
//   forward(img [B,1,H,W] float in [-1, 1]) -> (logits [B,10], features [B,128])
// and its test accuracy in `<out_dir>/classifier.json`. If the folder already
// holds a manifest.json, its `classifier` field is set.
//
// Torch-free header.
#ifndef DGRID_TRAINING_CLASSIFIER_H_
#define DGRID_TRAINING_CLASSIFIER_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace dgrid::training {

struct ClassifierTrainOptions {
  std::string data_dir;  // empty: Debian's /usr/share/datasets/fashion-mnist
  std::string out_dir;
  int epochs = 8;
  int batch = 128;
  double lr = 2e-3;
  uint64_t seed = 1;
  int threads = 2;
  int64_t limit_images = 0;
  int64_t max_steps = 0;
  std::string command;
};

struct ClassifierTrainResult {
  double test_accuracy = 0;  // on all 10 000 t10k images
  double train_seconds = 0;
  int64_t parameters = 0;
  int64_t feature_dim = 0;
};

absl::StatusOr<ClassifierTrainResult> TrainClassifier(const ClassifierTrainOptions& options);

}  // namespace dgrid::training

#endif  // DGRID_TRAINING_CLASSIFIER_H_
