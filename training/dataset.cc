#include "dataset.h"

#include <algorithm>

#include "idx_reader.h"

namespace dgrid::training {

absl::StatusOr<ImageDataset> LoadImageDataset(const std::string& dir, const std::string& split,
                                              int64_t limit, const torch::Device& device) {
  absl::StatusOr<LabeledImages> data = ReadSplit(dir, split, kNumClasses);
  if (!data.ok()) return data.status();
  const IdxImages& im = data->images;
  const int64_t n = limit > 0 ? std::min(limit, im.count) : im.count;
  torch::Tensor images =
      torch::from_blob(const_cast<uint8_t*>(im.pixels.data()), {n, 1, im.rows, im.cols},
                       torch::kUInt8)
          .clone();
  torch::Tensor labels =
      torch::from_blob(data->labels.data(), {n}, torch::kUInt8).to(torch::kLong);
  return ImageDataset{images.to(device), labels.to(device)};
}

torch::Tensor ToUnitRange(const torch::Tensor& pixels) {
  return pixels.to(torch::kFloat32).mul_(2.0 / 255.0).sub_(1.0);
}

}  // namespace dgrid::training
