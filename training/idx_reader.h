// Reads the IDX files of MNIST-style datasets (images idx3, labels idx1),
// gzip-compressed or plain, through zlib. The data stay as raw bytes: the
// trainer turns them into tensors, so this file needs no torch.
//
//   absl::StatusOr<IdxImages> images =
//       ReadIdxImages("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz");
//   if (!images.ok()) return images.status();  // names the file and the fault
//   const uint8_t* first = images->pixels.data();  // rows*cols bytes per image
//
// A file is rejected, with the file named in the error, when its magic number
// is wrong, a dimension is zero or absurd, or it holds fewer or more bytes than
// its header promises (a truncated download, a corrupt gzip stream).
#ifndef DGRID_TRAINING_IDX_READER_H_
#define DGRID_TRAINING_IDX_READER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace dgrid::training {

struct IdxImages {
  int64_t count = 0;
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<uint8_t> pixels;  // count * rows * cols, row-major
};

struct IdxLabels {
  std::vector<uint8_t> labels;
};

absl::StatusOr<IdxImages> ReadIdxImages(const std::string& path);
absl::StatusOr<IdxLabels> ReadIdxLabels(const std::string& path);

// A dataset split: images and labels of the same length.
struct LabeledImages {
  IdxImages images;
  std::vector<uint8_t> labels;
};

// Reads `<dir>/<split>-images-idx3-ubyte.gz` and the matching labels, and
// checks that their counts agree and that every label is below
// `num_classes`. split is "train" or "t10k".
absl::StatusOr<LabeledImages> ReadSplit(const std::string& dir,
                                        const std::string& split,
                                        int num_classes);

}  // namespace dgrid::training

#endif  // DGRID_TRAINING_IDX_READER_H_
