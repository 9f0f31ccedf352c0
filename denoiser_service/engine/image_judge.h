// A bundle's judge (manifest `judge`): an image classifier with named heads
// that says what a sample shows, for decision curves. The header is free of
// torch and protobuf, like the rest of the engine's.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<ImageJudge> judge,
//                    ImageJudge::Load("models/fashion-mnist", manifest, "cpu"));
//   ASSIGN_OR_RETURN(std::vector<ImageVerdict> verdicts,
//                    judge->Judge(pixels, /*batch=*/8, deadline));
//   verdicts[3][0].label;  // image 3, head 0 ("class"): the label's index
//
// Judge is thread-safe: calls take turns on one lock, a chunk of images at a
// time, so that concurrent callers share the judge and none holds it long.
// The judge runs beside the batcher's forward passes (its own small batches,
// on the caller's thread), never inside them: a curve's judging does not
// stall the grids' trajectories.
#ifndef DGRID_DENOISER_ENGINE_IMAGE_JUDGE_H_
#define DGRID_DENOISER_ENGINE_IMAGE_JUDGE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
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
  // Images per forward pass: the most one caller holds the judge for.
  static constexpr int kChunk = 32;

  // Loads `manifest.judge` from `bundle_dir` on `device` ("cpu" or "cuda")
  // and runs it once on a blank image: a head whose output is missing or
  // not [1, len(labels)] fails here, naming the head and the shapes.
  static absl::StatusOr<std::unique_ptr<ImageJudge>> Load(const std::string& bundle_dir,
                                                          const BundleManifest& manifest,
                                                          const std::string& device);
  ~ImageJudge();

  const JudgeSpec& spec() const { return spec_; }

  // `pixels`: `batch` 8-bit images [H, W, C] of the manifest's image_shape,
  // back to back. DEADLINE_EXCEEDED when `deadline` passes before the last
  // chunk ran, CANCELLED when `cancelled` says so between chunks.
  absl::StatusOr<std::vector<ImageVerdict>> Judge(absl::Span<const uint8_t> pixels, int batch,
                                                  absl::Time deadline,
                                                  const std::function<bool()>& cancelled = {});

 private:
  struct Impl;
  ImageJudge(const BundleManifest& manifest, std::unique_ptr<Impl> impl);
  // One forward over `batch` images; the caller holds mu_.
  absl::Status RunChunk(absl::Span<const uint8_t> pixels, int batch,
                        std::vector<ImageVerdict>* out);

  const JudgeSpec spec_;
  const std::vector<int64_t> image_shape_;  // [H, W, C]
  const double value_lo_, value_hi_;
  std::unique_ptr<Impl> impl_;
  // std::timed_mutex, not absl's: TSan sees it, and a caller waits for it
  // only until its deadline.
  std::timed_mutex mu_;
};

}  // namespace dgrid

#endif  // DGRID_DENOISER_ENGINE_IMAGE_JUDGE_H_
