// One loaded model bundle: its manifest, the TorchScript denoiser and the
// decoder, on CPU or CUDA. The header is free of torch and protobuf types so
// that the RPC layer can hold a model (DESIGN.md, layering rule).
//
//   ASSIGN_OR_RETURN(auto model, DenoiserModel::Load("models/fashion-mnist", {}));
//   RETURN_IF_ERROR(model->Forward(x, t, cond, batch, eps));
//
// Forward is not thread-safe: one TrajectoryBatcher thread owns each model.
#ifndef DGRID_DENOISER_ENGINE_DENOISER_MODEL_H_
#define DGRID_DENOISER_ENGINE_DENOISER_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/bundle_manifest.h"

namespace dgrid {

struct ModelLoadOptions {
  // "auto" (CUDA when the LibTorch build and a GPU have it), "cpu" or "cuda".
  std::string device = "auto";
};

class DenoiserModel {
 public:
  static absl::StatusOr<std::unique_ptr<DenoiserModel>> Load(const std::string& bundle_dir,
                                                             const ModelLoadOptions& options);
  ~DenoiserModel();

  const BundleManifest& manifest() const { return manifest_; }
  const std::string& device() const { return device_; }
  int64_t latent_numel() const { return manifest_.LatentNumel(); }

  // x: batch latents [batch, C, H, W] flattened; t, cond: batch values.
  // Writes batch model outputs to `out`. c10::Error becomes a Status.
  absl::Status Forward(absl::Span<const float> x, absl::Span<const int64_t> t,
                       absl::Span<const int64_t> cond, int batch, absl::Span<float> out);

  // Latents [batch, C, H, W] to 8-bit images [batch, H, W, C].
  absl::StatusOr<std::vector<uint8_t>> Decode(absl::Span<const float> latents, int batch);

 private:
  struct Impl;
  DenoiserModel(BundleManifest manifest, std::unique_ptr<Impl> impl, std::string device);

  BundleManifest manifest_;
  std::unique_ptr<Impl> impl_;
  std::string device_;
};

// Sets torch's intra-op thread count (its default here is 1) and returns what
// torch reports afterwards. Also tunes the CPU runtime under it for a
// process that runs forwards back to back: OpenBLAS single-threaded (torch's
// threads do the parallel work) and freed activations kept in the heap.
int SetTorchThreads(int threads);

}  // namespace dgrid

#endif  // DGRID_DENOISER_ENGINE_DENOISER_MODEL_H_
