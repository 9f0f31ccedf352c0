#include "common/wire.h"

#include "absl/strings/str_cat.h"
#include "common/png_image.h"
#include "common/status_macros.h"
#include "common/tensor_codec.h"

namespace dgrid {

void PathToProto(const Path& path, v1::Path* out) {
  out->set_init_seed(path.init_seed);
  out->clear_segments();
  for (const Segment& s : path.segments) {
    v1::Segment* seg = out->add_segments();
    seg->set_from_step(s.from_step);
    seg->set_noise_seed(s.noise_seed);
    if (!s.conditioning) continue;
    v1::Conditioning* c = seg->mutable_conditioning();
    if (s.conditioning->class_index >= 0) {
      c->set_class_index(s.conditioning->class_index);
    } else if (!s.conditioning->prompt.empty()) {
      c->set_prompt(s.conditioning->prompt);
    }
    c->set_negative_prompt(s.conditioning->negative_prompt);
  }
}

Path PathFromProto(const v1::Path& p) {
  Path path{p.init_seed(), {}};
  path.segments.reserve(p.segments_size());
  for (const v1::Segment& s : p.segments()) {
    Segment& segment = path.segments.emplace_back();
    segment.from_step = s.from_step();
    segment.noise_seed = s.noise_seed();
    if (!s.has_conditioning()) continue;
    const v1::Conditioning& c = s.conditioning();
    SegmentConditioning& out = segment.conditioning.emplace();
    if (c.label_case() == v1::Conditioning::kClassIndex) out.class_index = c.class_index();
    if (c.label_case() == v1::Conditioning::kPrompt) out.prompt = c.prompt();
    out.negative_prompt = c.negative_prompt();
  }
  return path;
}

v1::Spacing SpacingToProto(Spacing spacing) {
  switch (spacing) {
    case Spacing::kTrailing:
      return v1::SPACING_TRAILING;
    case Spacing::kLinspace:
      return v1::SPACING_LINSPACE;
    case Spacing::kLeading:
    default:
      return v1::SPACING_LEADING;
  }
}

absl::StatusOr<Spacing> SpacingFromProto(v1::Spacing spacing, Spacing unspecified,
                                         const std::string& field) {
  switch (spacing) {
    case v1::SPACING_UNSPECIFIED:
      return unspecified;
    case v1::SPACING_LEADING:
      return Spacing::kLeading;
    case v1::SPACING_TRAILING:
      return Spacing::kTrailing;
    case v1::SPACING_LINSPACE:
      return Spacing::kLinspace;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": unknown value ", static_cast<int>(spacing)));
  }
}

v1::Sampler SamplerToProto(Sampler sampler) {
  return sampler == Sampler::kDdim ? v1::SAMPLER_DDIM : v1::SAMPLER_EULER_ANCESTRAL;
}

absl::StatusOr<Sampler> SamplerFromProto(v1::Sampler sampler, const std::string& field) {
  switch (sampler) {
    case v1::SAMPLER_UNSPECIFIED:
    case v1::SAMPLER_DDIM:
      return Sampler::kDdim;
    case v1::SAMPLER_EULER_ANCESTRAL:
      return Sampler::kEulerAncestral;
    default:
      // The names the wire takes (JSON's too): SAMPLER_DDIM, not DDIM.
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": unknown value ", static_cast<int>(sampler),
                       "; known: SAMPLER_DDIM, SAMPLER_EULER_ANCESTRAL"));
  }
}

void SizeToProto(const SizeConditioning& s, v1::SizeConditioning* out) {
  out->set_original_height(s.original_height);
  out->set_original_width(s.original_width);
  out->set_crop_top(s.crop_top);
  out->set_crop_left(s.crop_left);
  out->set_target_height(s.target_height);
  out->set_target_width(s.target_width);
}

SizeConditioning SizeFromProto(const v1::SizeConditioning& s) {
  return {s.original_height(), s.original_width(), s.crop_top(),
          s.crop_left(),       s.target_height(),  s.target_width()};
}

v1::ModelInfo ModelInfoFromManifest(const BundleManifest& m) {
  v1::ModelInfo info;
  info.set_name(m.name);
  info.set_version(m.version);
  info.mutable_latent_shape()->Assign(m.latent_shape.begin(), m.latent_shape.end());
  info.mutable_image_shape()->Assign(m.image_shape.begin(), m.image_shape.end());
  for (const std::string& label : m.class_labels) info.add_prompts(label);
  info.set_train_timesteps(m.schedule.train_timesteps);
  info.set_steps_offset(m.schedule.steps_offset);
  info.set_set_alpha_to_one(m.schedule.set_alpha_to_one);
  info.set_float_timesteps(m.timestep_is_float);
  static const char* const kPrediction[] = {"epsilon", "sample", "v_prediction"};
  info.set_prediction_type(kPrediction[static_cast<int>(m.schedule.prediction)]);
  v1::SamplerConfig* d = info.mutable_defaults();
  d->set_steps(m.defaults.steps);
  d->set_eta(m.defaults.eta);
  d->set_guidance(m.defaults.guidance);
  d->set_spacing(SpacingToProto(m.defaults.spacing));
  info.set_license(m.license);
  info.set_description(m.description);
  info.set_conditioning(m.is_text() ? "text" : "class");
  if (m.is_text()) {
    for (const std::string& p : m.text.example_prompts) info.add_example_prompts(p);
    info.set_max_prompt_tokens(m.text.tokenizer.max_length);
    if (m.text.size_ids) {
      SizeToProto(m.text.DefaultSize(), info.mutable_default_size());
    }
  }
  for (const JudgeHead& head : m.judge.heads) {
    v1::JudgeHeadInfo* out = info.mutable_judge()->add_heads();
    out->set_name(head.name);
    for (const std::string& label : head.labels) out->add_labels(label);
  }
  return info;
}

absl::Status ImageToProto(absl::Span<const uint8_t> pixels, const BundleManifest& manifest,
                          v1::Image* image) {
  const std::vector<int64_t>& shape = manifest.image_shape;
  EncodeUint8Tensor(pixels, shape, image->mutable_pixels());
  absl::StatusOr<std::string> png = EncodePng(pixels, shape[1], shape[0], shape[2]);
  if (!png.ok()) return png.status();
  image->set_png(std::move(*png));
  return absl::OkStatus();
}

absl::Status RunEventToProto(const RunEvent& event, const BundleManifest& manifest,
                             bool previews, bool decode, v1::BranchEvent* out) {
  out->Clear();
  // Fields are set only when they hold something: a start step's capture has
  // no x0 preview, and with decode_finals_only a capture has no image, so
  // neither is sent as an empty message (a tensor of shape [] and no bytes).
  // Capture and Final name these fields alike.
  const bool preview = previews && !event.x0.empty();
  auto fill = [&](auto* message) -> absl::Status {
    message->set_trajectory(event.trajectory);
    EncodeFloatTensor(event.latent, manifest.latent_shape, message->mutable_latent());
    if (preview) EncodeFloatTensor(event.x0, manifest.latent_shape, message->mutable_x0_preview());
    if (!decode) return absl::OkStatus();
    // The engine decoded the images on its own thread, batched; only the
    // PNG encoding happens here.
    RETURN_IF_ERROR(ImageToProto(event.pixels, manifest, message->mutable_image()));
    if (!preview) return absl::OkStatus();
    return ImageToProto(event.x0_pixels, manifest, message->mutable_x0_image());
  };
  if (event.kind == RunEvent::Kind::kCapture) {
    v1::Capture* capture = out->mutable_capture();
    capture->set_step(event.step);
    capture->set_timestep(event.timestep);
    return fill(capture);
  }
  v1::Final* final = out->mutable_final();
  final->set_model_evals(event.model_evals);
  return fill(final);
}

}  // namespace dgrid
