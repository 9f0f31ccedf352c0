// The plain C++ form of a model bundle's manifest.json (proto
// dgrid.v1.ModelManifest), so that torch code can use it without protobuf
// headers. Read one with ReadManifest() in manifest_reader.h.
//
// Protobuf-free: the engine includes it.
#ifndef DGRID_COMMON_BUNDLE_MANIFEST_H_
#define DGRID_COMMON_BUNDLE_MANIFEST_H_

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace dgrid {

enum class PredictionType { kEpsilon, kSample, kVPrediction };
// diffusers' timestep_spacing (common/timesteps.h).
enum class Spacing { kLeading, kTrailing, kLinspace };
// "leading", "trailing" or "linspace", as figures and flags name them.
inline const char* SpacingName(Spacing spacing) {
  return spacing == Spacing::kLeading    ? "leading"
         : spacing == Spacing::kTrailing ? "trailing"
                                         : "linspace";
}
// How a step moves the latent: DDIM with eta, or Euler ancestral
// (denoiser_service/engine/euler_ancestral.h).
enum class Sampler { kDdim, kEulerAncestral };
// "ddim" or "euler_ancestral", as labels and cache keys name them.
inline const char* SamplerName(Sampler sampler) {
  return sampler == Sampler::kDdim ? "ddim" : "euler_ancestral";
}

struct NoiseScheduleSpec {
  std::string beta_schedule = "linear";
  double beta_start = 1e-4;
  double beta_end = 0.02;
  int train_timesteps = 1000;
  PredictionType prediction = PredictionType::kEpsilon;
  int steps_offset = 0;
  bool set_alpha_to_one = true;
};

struct SamplerDefaults {
  int steps = 50;
  float eta = 1.0f;
  float guidance = 1.0f;
  Spacing spacing = Spacing::kLeading;
};

// SDXL-style size and crop conditioning (the denoiser's time_ids), in
// pixels; 0 in a size is the model's default. As proto SizeConditioning.
struct SizeConditioning {
  // The largest size or crop offset a manifest or a request may give.
  static constexpr int kMaxPixels = 16384;
  int original_height = 0, original_width = 0;
  int crop_top = 0, crop_left = 0;
  int target_height = 0, target_width = 0;
  bool operator==(const SizeConditioning& o) const {
    return original_height == o.original_height && original_width == o.original_width &&
           crop_top == o.crop_top && crop_left == o.crop_left &&
           target_height == o.target_height && target_width == o.target_width;
  }
  // Each value by its proto field name, in proto order (the time_ids' order).
  std::array<std::pair<const char*, int>, 6> Fields() const {
    return {{{"original_height", original_height},
             {"original_width", original_width},
             {"crop_top", crop_top},
             {"crop_left", crop_left},
             {"target_height", target_height},
             {"target_width", target_width}}};
  }
  // This with each size of 0 replaced by `defaults`' (the crop is kept).
  SizeConditioning WithDefaults(const SizeConditioning& defaults) const {
    auto pick = [](int v, int fallback) { return v > 0 ? v : fallback; };
    return {pick(original_height, defaults.original_height),
            pick(original_width, defaults.original_width),
            crop_top,
            crop_left,
            pick(target_height, defaults.target_height),
            pick(target_width, defaults.target_width)};
  }
};

enum class ConditioningKind { kClass, kText };

// A text model's tokenizer files (relative to the bundle folder) and ids.
struct TokenizerFiles {
  std::string kind;  // "clip_bpe" or "words"
  std::string vocab;
  std::string merges;
  int64_t bos_id = -1;
  int64_t eos_id = -1;
  int64_t pad_id = 0;
  int64_t unk_id = 0;
  int max_length = 77;
};

// What a text model adds: the encoder from token ids to the context the
// denoiser attends to, and the tokenizer.
struct TextConditioning {
  std::string encoder_weights;
  int context_dim = 0;
  TokenizerFiles tokenizer;
  std::vector<std::string> example_prompts;
  // SDXL-style extras (manifest conditioning.extra). P > 0: the encoder also
  // gives pooled [B, P], the denoiser's fourth input.
  int pooled_dim = 0;
  // The denoiser takes time_ids [B, 6] as its last input.
  bool size_ids = false;
  // >= 0: the encoder takes a second ids tensor padded with this id.
  int64_t second_pad_id = -1;
  // An empty negative prompt is zeros, not the encoding of "".
  bool zeros_for_empty_negative = false;
  // The sizes a request leaves at 0 get (image_shape's unless the manifest
  // says otherwise).
  int default_height = 0, default_width = 0;
  // Those as the original and target size, with no crop.
  SizeConditioning DefaultSize() const {
    return {default_height, default_width, 0, 0, default_height, default_width};
  }
};

// One head of a judge: which output of the module holds its logits, and
// what each logit means.
struct JudgeHead {
  std::string name;
  int output = 0;
  std::vector<std::string> labels;
};

// An optional image classifier that says what a sample shows: decision
// curves count how often a branch's label differs from its trunk's.
struct JudgeSpec {
  std::string weights;  // empty: no judge
  std::vector<JudgeHead> heads;
  bool present() const { return !weights.empty(); }
};

struct BundleManifest {
  std::string name;
  std::string version;
  std::string description;
  std::vector<int64_t> latent_shape;  // [C, H, W]
  std::vector<int64_t> image_shape;   // [H, W, C]
  std::string weights;                // relative to the bundle folder
  bool timestep_is_float = false;
  NoiseScheduleSpec schedule;
  ConditioningKind conditioning = ConditioningKind::kClass;
  // Class models.
  std::vector<std::string> class_labels;
  int64_t null_label = 0;
  // Text models.
  TextConditioning text;
  std::string decoder_kind = "identity";  // or "torchscript"
  std::string decoder_weights;
  double value_lo = -1.0;
  double value_hi = 1.0;
  // Latents are divided by this before decoding (SD 1.x: 0.18215).
  double latent_scale = 1.0;
  SamplerDefaults defaults;
  std::string license;
  std::string classifier;
  JudgeSpec judge;
  // The largest batch the traced parts were checked at; 0: any.
  int max_batch = 0;

  bool is_text() const { return conditioning == ConditioningKind::kText; }
  int64_t LatentNumel() const;
  int64_t ImageNumel() const;
  // Index of `prompt` in class_labels, or -1.
  int ClassIndex(const std::string& prompt) const;
};

}  // namespace dgrid

#endif  // DGRID_COMMON_BUNDLE_MANIFEST_H_
