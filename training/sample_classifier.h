// The bundle's evaluation classifier (classifier.pt, trained by
// `dgrid-train classifier`): TorchScript
//   forward(img [B,1,H,W] float in [-1, 1]) -> (logits [B,K], features [B,D]).
// It scores 8-bit images — the engine's decoded samples and the dataset's
// real images alike, so both go through the same quantisation.
//
//   ASSIGN_OR_RETURN(auto classifier, SampleClassifier::Load(dir + "/classifier.pt"));
//   ASSIGN_OR_RETURN(Classified c, classifier->Classify(pixels, n, 28, 28));
//   c.labels[i];  c.features[i * c.feature_dim + j];
//
// Not thread-safe. Torch-free header.
#ifndef DGRID_TRAINING_SAMPLE_CLASSIFIER_H_
#define DGRID_TRAINING_SAMPLE_CLASSIFIER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace dgrid::training {

struct Classified {
  std::vector<int> labels;      // argmax of the logits
  std::vector<float> features;  // n x feature_dim, row-major
  int feature_dim = 0;
};

class SampleClassifier {
 public:
  static absl::StatusOr<std::unique_ptr<SampleClassifier>> Load(const std::string& path);
  ~SampleClassifier();

  // `pixels`: n grayscale images of height x width bytes.
  absl::StatusOr<Classified> Classify(absl::Span<const uint8_t> pixels, int64_t n, int height,
                                      int width);

 private:
  struct Impl;
  explicit SampleClassifier(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace dgrid::training

#endif  // DGRID_TRAINING_SAMPLE_CLASSIFIER_H_
