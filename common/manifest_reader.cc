#include "common/manifest_reader.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "dgrid/v1/manifest.pb.h"
#include "google/protobuf/util/json_util.h"

namespace dgrid {
namespace {

constexpr int64_t kMaxDim = 4096;
constexpr int64_t kMaxLatentElements = 1 << 22;

absl::Status Invalid(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("manifest ", field, ": ", what));
}

absl::Status CheckShape(const google::protobuf::RepeatedField<int64_t>& shape,
                        absl::string_view field) {
  if (shape.size() != 3) {
    return Invalid(field, absl::StrCat("needs 3 dimensions, got ", shape.size()));
  }
  int64_t numel = 1;
  for (int64_t d : shape) {
    if (d < 1 || d > kMaxDim) {
      return Invalid(field, absl::StrCat("dimension ", d, " is outside [1, ", kMaxDim, "]"));
    }
    numel *= d;
  }
  if (numel > kMaxLatentElements) return Invalid(field, "too many elements");
  return absl::OkStatus();
}

// A file named by the manifest must lie inside the bundle folder.
absl::Status CheckBundleFile(const std::string& path, const char* field) {
  if (path.empty()) return Invalid(field, "is required");
  if (path.find("..") != std::string::npos || path.front() == '/') {
    return Invalid(field, "must be a file inside the bundle folder");
  }
  return absl::OkStatus();
}

absl::StatusOr<BundleManifest> FromProto(const v1::ModelManifest& p) {
  BundleManifest m;
  if (p.name().empty()) return Invalid("name", "is required");
  m.name = p.name();
  m.version = p.version();
  m.description = p.description();
  if (auto s = CheckShape(p.latent_shape(), "latent_shape"); !s.ok()) return s;
  m.latent_shape.assign(p.latent_shape().begin(), p.latent_shape().end());
  if (p.image_shape_size() == 0) {
    m.image_shape = {m.latent_shape[1], m.latent_shape[2], m.latent_shape[0]};
  } else {
    if (auto s = CheckShape(p.image_shape(), "image_shape"); !s.ok()) return s;
    m.image_shape.assign(p.image_shape().begin(), p.image_shape().end());
    if (m.image_shape[2] != 1 && m.image_shape[2] != 3) {
      return Invalid("image_shape", "channels must be 1 or 3");
    }
  }
  if (p.weights().empty()) return Invalid("weights", "is required");
  if (p.weights().find("..") != std::string::npos || p.weights().front() == '/') {
    return Invalid("weights", "must be a file inside the bundle folder");
  }
  m.weights = p.weights();
  if (p.timestep_dtype().empty() || p.timestep_dtype() == "long") {
    m.timestep_is_float = false;
  } else if (p.timestep_dtype() == "float") {
    m.timestep_is_float = true;
  } else {
    return Invalid("timestep_dtype", "must be \"long\" or \"float\"");
  }

  const v1::ModelManifest::NoiseSchedule& s = p.schedule();
  m.schedule.beta_schedule = s.beta_schedule().empty() ? "linear" : s.beta_schedule();
  if (m.schedule.beta_schedule != "linear" && m.schedule.beta_schedule != "scaled_linear" &&
      m.schedule.beta_schedule != "squaredcos_cap_v2") {
    return Invalid("schedule.beta_schedule",
                   "must be linear, scaled_linear or squaredcos_cap_v2");
  }
  m.schedule.beta_start = s.beta_start();
  m.schedule.beta_end = s.beta_end();
  if (m.schedule.beta_schedule != "squaredcos_cap_v2" &&
      !(s.beta_start() > 0 && s.beta_start() <= s.beta_end() && s.beta_end() < 1)) {
    return Invalid("schedule.beta_start", "needs 0 < beta_start <= beta_end < 1");
  }
  if (s.train_timesteps() < 2 || s.train_timesteps() > 100000) {
    return Invalid("schedule.train_timesteps", "must be in [2, 100000]");
  }
  m.schedule.train_timesteps = s.train_timesteps();
  if (s.prediction_type().empty() || s.prediction_type() == "epsilon") {
    m.schedule.prediction = PredictionType::kEpsilon;
  } else if (s.prediction_type() == "sample") {
    m.schedule.prediction = PredictionType::kSample;
  } else if (s.prediction_type() == "v_prediction") {
    m.schedule.prediction = PredictionType::kVPrediction;
  } else {
    return Invalid("schedule.prediction_type", "must be epsilon, sample or v_prediction");
  }
  if (s.steps_offset() < 0 || s.steps_offset() >= s.train_timesteps()) {
    return Invalid("schedule.steps_offset", "must be in [0, train_timesteps)");
  }
  m.schedule.steps_offset = s.steps_offset();
  m.schedule.set_alpha_to_one = s.has_set_alpha_to_one() ? s.set_alpha_to_one().value() : true;

  const v1::ModelManifest::Conditioning& c = p.conditioning();
  if (c.kind().empty() || c.kind() == "class") {
    m.conditioning = ConditioningKind::kClass;
  } else if (c.kind() == "text") {
    m.conditioning = ConditioningKind::kText;
  } else {
    return Invalid("conditioning.kind", "must be \"class\" or \"text\"");
  }
  if (c.has_extra()) {
    return Invalid("conditioning.extra",
                   "SDXL-style extra conditioning (pooled text, size ids) is not supported yet");
  }
  m.class_labels.assign(c.class_labels().begin(), c.class_labels().end());
  m.null_label = c.null_label();
  if (m.is_text()) {
    if (!m.class_labels.empty()) {
      return Invalid("conditioning.class_labels", "a text model takes no class labels");
    }
    TextConditioning& t = m.text;
    t.encoder_weights = c.text_encoder().weights();
    if (auto s = CheckBundleFile(t.encoder_weights, "conditioning.text_encoder.weights");
        !s.ok()) {
      return s;
    }
    t.context_dim = c.text_encoder().context_dim();
    if (t.context_dim < 1 || t.context_dim > 65536) {
      return Invalid("conditioning.text_encoder.context_dim", "must be in [1, 65536]");
    }
    const v1::ModelManifest::Tokenizer& k = c.tokenizer();
    t.tokenizer.kind = k.kind();
    if (k.kind() != "clip_bpe" && k.kind() != "words") {
      return Invalid("conditioning.tokenizer.kind", "must be \"clip_bpe\" or \"words\"");
    }
    t.tokenizer.vocab = k.vocab();
    if (auto s = CheckBundleFile(k.vocab(), "conditioning.tokenizer.vocab"); !s.ok()) return s;
    t.tokenizer.merges = k.merges();
    if (k.kind() == "clip_bpe") {
      if (auto s = CheckBundleFile(k.merges(), "conditioning.tokenizer.merges"); !s.ok()) {
        return s;
      }
    }
    t.tokenizer.bos_id = k.bos_id();
    t.tokenizer.eos_id = k.eos_id();
    t.tokenizer.pad_id = k.pad_id();
    t.tokenizer.unk_id = k.unk_id();
    t.tokenizer.max_length = k.max_length() == 0 ? 77 : k.max_length();
    if (t.tokenizer.max_length < 2 || t.tokenizer.max_length > 4096) {
      return Invalid("conditioning.tokenizer.max_length", "must be in [2, 4096]");
    }
    t.example_prompts.assign(c.example_prompts().begin(), c.example_prompts().end());
  }

  m.decoder_kind = p.decoder().kind().empty() ? "identity" : p.decoder().kind();
  if (m.decoder_kind != "identity" && m.decoder_kind != "torchscript") {
    return Invalid("decoder.kind", "must be identity or torchscript");
  }
  if (m.decoder_kind == "torchscript" && p.decoder().weights().empty()) {
    return Invalid("decoder.weights", "is required for a torchscript decoder");
  }
  if (m.decoder_kind == "identity" && m.image_shape[2] != m.latent_shape[0]) {
    return Invalid("image_shape", "must match latent_shape for an identity decoder");
  }
  m.decoder_weights = p.decoder().weights();
  m.latent_scale = p.decoder().latent_scale() == 0 ? 1.0 : p.decoder().latent_scale();
  if (!(m.latent_scale > 0) || !std::isfinite(m.latent_scale)) {
    return Invalid("decoder.latent_scale", "must be positive and finite");
  }
  if (p.decoder().value_range_size() == 2) {
    m.value_lo = p.decoder().value_range(0);
    m.value_hi = p.decoder().value_range(1);
    if (!(m.value_lo < m.value_hi) || !std::isfinite(m.value_lo) ||
        !std::isfinite(m.value_hi)) {
      return Invalid("decoder.value_range", "needs lo < hi, both finite");
    }
  } else if (p.decoder().value_range_size() != 0) {
    return Invalid("decoder.value_range", "needs exactly [lo, hi]");
  }

  const v1::ModelManifest::SamplerDefaults& d = p.defaults();
  if (d.steps() != 0) m.defaults.steps = d.steps();
  m.defaults.eta = static_cast<float>(d.eta());
  m.defaults.guidance = d.guidance() != 0 ? static_cast<float>(d.guidance()) : 1.0f;
  if (d.spacing() == "trailing") m.defaults.spacing = Spacing::kTrailing;
  if (m.defaults.steps < 1 || m.defaults.steps > m.schedule.train_timesteps) {
    return Invalid("defaults.steps", "must be in [1, train_timesteps]");
  }
  if (!(m.defaults.eta >= 0 && m.defaults.eta <= 1)) {
    return Invalid("defaults.eta", "must be in [0, 1]");
  }
  m.license = p.data().license();
  m.classifier = p.classifier();
  return m;
}

}  // namespace

int64_t BundleManifest::LatentNumel() const {
  int64_t n = 1;
  for (int64_t d : latent_shape) n *= d;
  return n;
}

int64_t BundleManifest::ImageNumel() const {
  int64_t n = 1;
  for (int64_t d : image_shape) n *= d;
  return n;
}

int BundleManifest::ClassIndex(const std::string& prompt) const {
  for (size_t i = 0; i < class_labels.size(); ++i) {
    if (class_labels[i] == prompt) return static_cast<int>(i);
  }
  return -1;
}

absl::StatusOr<BundleManifest> ParseManifestJson(absl::string_view json) {
  v1::ModelManifest proto;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  const auto status = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(json.data(), json.size()), &proto, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("manifest.json: ", std::string(status.message())));
  }
  return FromProto(proto);
}

absl::StatusOr<BundleManifest> ReadManifest(const std::string& bundle_dir) {
  const std::string path = bundle_dir + "/manifest.json";
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream text;
  text << in.rdbuf();
  auto manifest = ParseManifestJson(text.str());
  if (!manifest.ok()) {
    return absl::Status(manifest.status().code(),
                        absl::StrCat(path, ": ", manifest.status().message()));
  }
  return manifest;
}

}  // namespace dgrid
