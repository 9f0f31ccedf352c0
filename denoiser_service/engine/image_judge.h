// A bundle's judge (manifest `judge`): an image classifier with named heads
// that says what a sample shows, for decision curves. The header is free of
// torch and protobuf, like the rest of the engine's.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<ImageJudge> judge,
//                    ImageJudge::Load("models/fashion-mnist", manifest, "cpu"));
//   ASSIGN_OR_RETURN(std::vector<ImageVerdict> verdicts,
//                    judge->Judge(pixels, /*batch=*/8));
//   verdicts[3][0].label;  // image 3, head 0 ("class"): the label's index
//
// Judge is thread-safe: concurrent calls run side by side. The denoiser runs
// it where it runs its decoder for a Decode request, on the batcher's forward
// workers between iterations (TrajectoryBatcher::RunBeside): a chunk of
// images at a time, split over the cores, in turns with the trajectories. On
// RPC threads beside the passes it competed with them for the cores, and
// each new thread re-created torch's thread pools.
#ifndef DGRID_DENOISER_ENGINE_IMAGE_JUDGE_H_
#define DGRID_DENOISER_ENGINE_IMAGE_JUDGE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/bundle_manifest.h"

namespace dgrid {

// One head's answer for one image: the arg-max label and its softmax
// probability.
struct HeadVerdict {
  int label = 0;
  float probability = 0;
};

// One image's answers, one per head in the manifest's order.
using ImageVerdict = std::vector<HeadVerdict>;

class ImageJudge {
 public:
  // Loads `manifest.judge` from `bundle_dir` on `device` ("cpu" or "cuda")
  // and runs it once on a blank image: a head whose output is missing or
  // not [1, len(labels)] fails here, naming the head and the shapes.
  static absl::StatusOr<std::unique_ptr<ImageJudge>> Load(const std::string& bundle_dir,
                                                          const BundleManifest& manifest,
                                                          const std::string& device);
  ~ImageJudge();

  const JudgeSpec& spec() const { return spec_; }
  // `pixels`: `batch` 8-bit images [H, W, C] of the manifest's image_shape,
  // back to back; one forward pass over them all, on this thread's torch
  // threads.
  absl::StatusOr<std::vector<ImageVerdict>> Judge(absl::Span<const uint8_t> pixels,
                                                  int batch) const;

 private:
  struct Impl;
  ImageJudge(const BundleManifest& manifest, std::unique_ptr<Impl> impl);

  const JudgeSpec spec_;
  const std::vector<int64_t> image_shape_;  // [H, W, C]
  const double value_lo_, value_hi_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dgrid

#endif  // DGRID_DENOISER_ENGINE_IMAGE_JUDGE_H_
