// Fashion-MNIST as tensors: the IDX files (idx_reader.h) loaded once into a
// uint8 image tensor and an int64 label tensor, on the training device.
//
//   absl::StatusOr<ImageDataset> train = LoadImageDataset(dir, "train", 0, device);
//   torch::Tensor x = ToUnitRange(train->images.index_select(0, idx));  // [-1, 1]
#ifndef DGRID_TRAINING_DATASET_H_
#define DGRID_TRAINING_DATASET_H_

#include <torch/script.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace dgrid::training {

inline constexpr char kDefaultDataDir[] = "/usr/share/datasets/fashion-mnist";
inline constexpr int kNumClasses = 10;

struct ImageDataset {
  torch::Tensor images;  // uint8 [N, 1, H, W]
  torch::Tensor labels;  // int64 [N]
  int64_t size() const { return images.size(0); }
};

// Loads `split` ("train" or "t10k") from `dir`; `limit` > 0 keeps only the
// first `limit` images (for smoke tests).
absl::StatusOr<ImageDataset> LoadImageDataset(const std::string& dir, const std::string& split,
                                              int64_t limit, const torch::Device& device);

// uint8 pixels 0..255 -> float32 in [-1, 1], the bundle's value range.
torch::Tensor ToUnitRange(const torch::Tensor& pixels);

}  // namespace dgrid::training

#endif  // DGRID_TRAINING_DATASET_H_
