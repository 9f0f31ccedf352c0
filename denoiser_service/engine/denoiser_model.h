// One loaded model bundle: its manifest, the TorchScript denoiser and the
// decoder, and for a text model its tokenizer and text encoder, on CPU or
// CUDA. The header is free of torch and protobuf types so that the RPC layer
// can hold a model (docs/ARCHITECTURE.md, "Layering"). Load checks that the
// parts agree (latent channels, context width, image shape) with one probe
// through each, and that the model takes the whole range of what a request
// can give (every token id of the vocabulary, every class index, the first
// and last timestep), and names the file and the shapes or range when not.
//
//   ASSIGN_OR_RETURN(auto model, DenoiserModel::Load("models/fashion-mnist", {}));
//   RETURN_IF_ERROR(model->Forward(x, t, cond, batch, eps));           // class model
//   RETURN_IF_ERROR(model->EncodeText(ids, 1, encoding));              // text model
//   RETURN_IF_ERROR(model->ForwardText(x, t, encodings, time_ids, batch, eps));
//
// One TrajectoryBatcher owns each model and runs all of its passes. Forward,
// ForwardText, EncodeText and Decode keep no state between calls and may run
// on several threads at once: the batcher runs the chunks of one pass in
// parallel (forward_workers.h).
#ifndef DGRID_DENOISER_ENGINE_DENOISER_MODEL_H_
#define DGRID_DENOISER_ENGINE_DENOISER_MODEL_H_

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/bundle_manifest.h"

namespace dgrid {

// A latent magnitude no sampler reaches (unit-variance noise and the data:
// tens at most). A latent past it that turns non-finite in the model or the
// decoder is the caller's input's doing; one within it, the replica's.
inline constexpr float kLatentBeyondAnySampler = 1e4f;

// The largest magnitude in `values` (0 for none), to compare with it.
inline float LargestMagnitude(absl::Span<const float> values) {
  float largest = 0;
  for (float v : values) largest = std::max(largest, std::abs(v));
  return largest;
}

struct ModelLoadOptions {
  // "auto" (CUDA when the LibTorch build and a GPU have it), "cpu" or "cuda".
  std::string device = "auto";
};

class Tokenizer;

class DenoiserModel {
 public:
  static absl::StatusOr<std::unique_ptr<DenoiserModel>> Load(const std::string& bundle_dir,
                                                             const ModelLoadOptions& options);
  ~DenoiserModel();

  const BundleManifest& manifest() const { return manifest_; }
  const std::string& device() const { return device_; }
  int64_t latent_numel() const { return manifest_.LatentNumel(); }

  // x: batch latents [batch, C, H, W] flattened; t, cond: batch values (t
  // goes to the model as int64, whole, unless the manifest's timestep_dtype
  // is "float"). Writes batch model outputs to `out`. c10::Error becomes a
  // Status.
  absl::Status Forward(absl::Span<const float> x, absl::Span<const float> t,
                       absl::Span<const int64_t> cond, int batch, absl::Span<float> out);

  // Text models: x, t as above; `encodings` [batch, encoding_size()] as
  // EncodeText gives them; time_ids [batch, 6] for a model with size ids
  // (TimeIds), else empty.
  absl::Status ForwardText(absl::Span<const float> x, absl::Span<const float> t,
                           absl::Span<const float> encodings, absl::Span<const float> time_ids,
                           int batch, absl::Span<float> out);
  // Text models: padded token ids [batch, L] to encodings [batch,
  // encoding_size()]: each prompt's context [L, D], then (SDXL-style) its
  // pooled embedding [P].
  absl::Status EncodeText(absl::Span<const int64_t> ids, int batch, absl::Span<float> encodings);
  // The tokenizer of a text model, else null. Thread-safe (it holds no state).
  const Tokenizer* tokenizer() const;
  // L and D of a text model's context; 0 for a class model.
  int context_length() const;
  int context_dim() const { return manifest_.text.context_dim; }
  // Floats per prompt that EncodeText gives: L * D, plus P when pooled.
  size_t encoding_size() const;
  // A model with size ids: the time_ids row for `size`, its zeros replaced
  // by the manifest's defaults.
  std::array<float, 6> TimeIds(const SizeConditioning& size) const;

  // Latents [batch, C, H, W] to 8-bit images [batch, H, W, C]; the latents
  // are divided by the manifest's latent_scale first. An image the decoder
  // gives non-finite values for (NaN would come out black) fails the call
  // as INTERNAL; with `non_finite`, such images are flagged there instead
  // and the call goes on, so that the caller blames the input or the
  // replica by what it knows of the latents (TrajectoryBatcher).
  absl::StatusOr<std::vector<uint8_t>> Decode(absl::Span<const float> latents, int batch,
                                              std::vector<char>* non_finite = nullptr);

 private:
  struct Impl;
  DenoiserModel(BundleManifest manifest, std::unique_ptr<Impl> impl, std::string device);
  // One probe through each part; errors name the file and the shapes.
  absl::Status Probe(const std::string& bundle_dir);
  // One probe at the extremes of what a request can give (token ids, class
  // indices, timesteps); errors name the file and the range.
  absl::Status ProbeRanges(const std::string& bundle_dir);
  // Forward and ForwardText: `cond` for a class model, `context` for a text
  // model.
  absl::Status RunForward(absl::Span<const float> x, absl::Span<const float> t,
                          absl::Span<const int64_t> cond, absl::Span<const float> encodings,
                          absl::Span<const float> time_ids, int batch, absl::Span<float> out);
  // A text model's probe: its encoder's output shapes, then one forward.
  absl::Status ProbeText(const std::string& bundle_dir);

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
