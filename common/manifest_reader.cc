#include "common/manifest_reader.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/bundle_files.h"
#include "common/short_text.h"
#include "common/status_macros.h"
#include "common/timesteps.h"
#include "dgrid/v1/manifest.pb.h"
#include "google/protobuf/util/json_util.h"

namespace dgrid {
namespace {

constexpr int64_t kMaxDim = 4096;
constexpr int64_t kMaxLatentElements = 1 << 22;
// A manifest is a few KB; this bounds the read of a hostile one.
constexpr uint64_t kMaxManifestBytes = 1 << 20;
// Ids and labels are int32 in every tokenizer and embedding we load.
constexpr int64_t kMaxId = std::numeric_limits<int32_t>::max();
// The sampler's own bound on a request's guidance (TrajectoryBatcher).
constexpr double kMaxGuidance = 100;
// Far outside these, decoding is all black or all white (1e-300 was tried).
// Real bundles: SD 1.x 0.18215, SDXL 0.13025, SD3 1.5305.
constexpr double kMinLatentScale = 1e-4, kMaxLatentScale = 1e4;
constexpr double kMaxValueMagnitude = 1e6, kMinValueSpan = 1e-6;
// Smaller betas make 1 - alpha_bar round to 0, which the sampler divides by.
constexpr double kMinBeta = 1e-8, kMaxBeta = 0.999;
// Below it, x0 = x / sqrt(alpha-bar) overflows a float (the cosine schedule
// reaches about 2e-13 at 100000 timesteps).
constexpr double kMinAlphaBar = 1e-20;
// A judge's heads and labels travel in every ModelInfo: keep them small.
constexpr int kMaxJudgeHeads = 16, kMaxJudgeLabels = 4096;
constexpr size_t kMaxJudgeText = 128;
// A description of several sentences; example prompts as long as a prompt
// may be (the denoiser's limit), a list a page can show.
constexpr size_t kMaxDescriptionBytes = 4096;
constexpr int kMaxExamplePrompts = 64;

absl::Status Invalid(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("manifest ", field, ": ", what));
}

// A name, version or class label: shown in logs, `dgrid models` and every
// ModelInfo, so short, UTF-8 and without control characters (a newline split
// the server's log line, an escape coloured the terminal).
absl::Status CheckLabel(const std::string& text, absl::string_view field, bool may_be_empty) {
  if (text.empty()) {
    return may_be_empty ? absl::OkStatus() : Invalid(field, "is required");
  }
  if (text.size() > kMaxJudgeText) {
    return Invalid(field, absl::StrCat("is ", text.size(), " bytes, more than ", kMaxJudgeText));
  }
  if (!IsValidUtf8(text)) return Invalid(field, "is not valid UTF-8");
  for (const char c : text) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return Invalid(field, absl::StrCat("holds a control character: ", ShortQuote(text)));
    }
  }
  return absl::OkStatus();
}

// A description, a licence or an example prompt: longer text, shown as it is
// (`dgrid models`, the explorer), so UTF-8 without control characters but
// a description's line breaks and tabs.
absl::Status CheckText(const std::string& text, absl::string_view field, size_t max_bytes,
                       bool lines) {
  if (text.size() > max_bytes) {
    return Invalid(field, absl::StrCat("is ", text.size(), " bytes, more than ", max_bytes));
  }
  if (!IsValidUtf8(text)) return Invalid(field, "is not valid UTF-8");
  for (const char c : text) {
    const bool layout = c == '\n' || c == '\r' || c == '\t';
    if ((static_cast<unsigned char>(c) < 0x20 && !(lines && layout)) || c == 0x7f) {
      return Invalid(field, absl::StrCat("holds a control character: ", ShortQuote(text)));
    }
  }
  return absl::OkStatus();
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

// A judge's heads are what curves report by name: each needs a name of its
// own and labels for its logits.
absl::StatusOr<JudgeSpec> JudgeFromProto(const v1::ModelManifest::Judge& p) {
  JudgeSpec judge;
  RETURN_IF_ERROR(CheckBundleFile(p.weights(), "judge.weights"));
  judge.weights = p.weights();
  if (p.heads_size() < 1 || p.heads_size() > kMaxJudgeHeads) {
    return Invalid("judge.heads", absl::StrCat("needs 1 to ", kMaxJudgeHeads, " heads, got ",
                                               p.heads_size()));
  }
  for (int i = 0; i < p.heads_size(); ++i) {
    const v1::ModelManifest::JudgeHead& h = p.heads(i);
    const std::string field = absl::StrCat("judge.heads[", i, "]");
    RETURN_IF_ERROR(CheckLabel(h.name(), field + ".name", /*may_be_empty=*/false));
    for (const JudgeHead& before : judge.heads) {
      if (before.name == h.name()) return Invalid(field + ".name", "repeats an earlier head's");
    }
    if (h.output() < 0 || h.output() >= kMaxJudgeHeads) {
      return Invalid(field + ".output", absl::StrCat("must be in [0, ", kMaxJudgeHeads, ")"));
    }
    if (h.labels_size() < 2 || h.labels_size() > kMaxJudgeLabels) {
      return Invalid(field + ".labels", absl::StrCat("needs 2 to ", kMaxJudgeLabels,
                                                     " labels, got ", h.labels_size()));
    }
    for (int j = 0; j < h.labels_size(); ++j) {
      const std::string label_field = absl::StrCat(field, ".labels[", j, "]");
      RETURN_IF_ERROR(CheckLabel(h.labels(j), label_field, /*may_be_empty=*/false));
      // Verdicts are compared by index but reported by name.
      if (std::find(h.labels().begin(), h.labels().begin() + j, h.labels(j)) !=
          h.labels().begin() + j) {
        return Invalid(label_field,
                       absl::StrCat(ShortQuote(h.labels(j)), " repeats an earlier label"));
      }
    }
    judge.heads.push_back({h.name(), h.output(), {h.labels().begin(), h.labels().end()}});
  }
  return judge;
}

// The shapes, the denoiser's file and its timestep type.
absl::Status ReadShapesAndWeights(const v1::ModelManifest& p, BundleManifest& m) {
  if (auto s = CheckShape(p.latent_shape(), "latent_shape"); !s.ok()) return s;
  m.latent_shape.assign(p.latent_shape().begin(), p.latent_shape().end());
  if (p.image_shape_size() == 0) {
    m.image_shape = {m.latent_shape[1], m.latent_shape[2], m.latent_shape[0]};
  } else {
    if (auto s = CheckShape(p.image_shape(), "image_shape"); !s.ok()) return s;
    m.image_shape.assign(p.image_shape().begin(), p.image_shape().end());
  }
  // Given, or the latent's own shape: an image is grey or RGB.
  if (m.image_shape[2] != 1 && m.image_shape[2] != 3) {
    return Invalid("image_shape", absl::StrCat("channels must be 1 or 3, got ", m.image_shape[2],
                                               p.image_shape_size() == 0
                                                   ? " (from latent_shape: give image_shape)"
                                                   : ""));
  }
  RETURN_IF_ERROR(CheckBundleFile(p.weights(), "weights"));
  m.weights = p.weights();
  if (p.timestep_dtype().empty() || p.timestep_dtype() == "long") {
    m.timestep_is_float = false;
  } else if (p.timestep_dtype() == "float") {
    m.timestep_is_float = true;
  } else {
    return Invalid("timestep_dtype", "must be \"long\" or \"float\"");
  }
  return absl::OkStatus();
}

// schedule: the noise schedule the model was trained with.
absl::Status ReadSchedule(const v1::ModelManifest& p, BundleManifest& m) {
  const v1::ModelManifest::NoiseSchedule& s = p.schedule();
  m.schedule.beta_schedule = s.beta_schedule().empty() ? "linear" : s.beta_schedule();
  if (m.schedule.beta_schedule != "linear" && m.schedule.beta_schedule != "scaled_linear" &&
      m.schedule.beta_schedule != "squaredcos_cap_v2") {
    return Invalid("schedule.beta_schedule",
                   "must be linear, scaled_linear or squaredcos_cap_v2");
  }
  m.schedule.beta_start = s.beta_start();
  m.schedule.beta_end = s.beta_end();
  // The cosine schedule ignores the betas, but no NaN passes anyway.
  const double min_beta = m.schedule.beta_schedule == "squaredcos_cap_v2" ? 0 : kMinBeta;
  if (!(s.beta_end() >= min_beta && s.beta_end() <= kMaxBeta)) {
    return Invalid("schedule.beta_end", absl::StrCat("must be in [", min_beta, ", ", kMaxBeta,
                                                     "], got ", s.beta_end()));
  }
  if (!(s.beta_start() >= min_beta && s.beta_start() <= s.beta_end())) {
    return Invalid("schedule.beta_start", absl::StrCat("needs ", min_beta,
                                                       " <= beta_start <= beta_end, got ",
                                                       s.beta_start()));
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
  // x0 = (x - sqrt(1 - a) eps) / sqrt(a): an alpha-bar that underflows
  // makes every sample overflow to Inf, then NaN.
  const double last = AlphasCumprod(m.schedule).back();
  if (!(last >= kMinAlphaBar)) {
    return Invalid("schedule.beta_end",
                   absl::StrCat("alpha-bar at the last training timestep is ", last, ", below ",
                                kMinAlphaBar, ": samples would overflow; lower beta_end or "
                                "train_timesteps"));
  }
  return absl::OkStatus();
}

// conditioning.extra of a text model: SDXL's pooled embedding, size ids,
// second tokenizer padding and zeroed empty negative prompt.
absl::Status ReadExtraConditioning(const v1::ModelManifest::ExtraConditioning& e,
                                   BundleManifest& m) {
  TextConditioning& t = m.text;
  if (e.pooled_dim() < 0 || e.pooled_dim() > 65536) {
    return Invalid("conditioning.extra.pooled_dim", "must be in [0, 65536]");
  }
  t.pooled_dim = e.pooled_dim();
  t.size_ids = e.size_ids();
  if (e.has_second_pad_id()) {
    if (e.second_pad_id().value() < 0 || e.second_pad_id().value() > kMaxId) {
      return Invalid("conditioning.extra.second_pad_id",
                     absl::StrCat("must be in [0, ", kMaxId, "]"));
    }
    t.second_pad_id = e.second_pad_id().value();
  }
  t.zeros_for_empty_negative = e.zeros_for_empty_negative();
  t.default_height = static_cast<int>(m.image_shape[0]);
  t.default_width = static_cast<int>(m.image_shape[1]);
  if (e.default_size_size() == 2) {
    t.default_height = e.default_size(0);
    t.default_width = e.default_size(1);
    constexpr int kMax = SizeConditioning::kMaxPixels;
    if (t.default_height < 1 || t.default_height > kMax || t.default_width < 1 ||
        t.default_width > kMax) {
      return Invalid("conditioning.extra.default_size",
                     absl::StrCat("sizes must be in [1, ", kMax, "]"));
    }
  } else if (e.default_size_size() != 0) {
    return Invalid("conditioning.extra.default_size", "needs exactly [height, width]");
  }
  if (!t.size_ids && e.default_size_size() != 0) {
    return Invalid("conditioning.extra.default_size", "is for a model with size_ids");
  }
  return absl::OkStatus();
}

// conditioning of a text model: the encoder and the tokenizer.
absl::Status ReadTextConditioning(const v1::ModelManifest::Conditioning& c, BundleManifest& m) {
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
  // -1: none (the words kind); the tokenizer checks each against its vocabulary.
  const std::pair<const char*, int64_t> ids[] = {
      {"conditioning.tokenizer.bos_id", k.bos_id()}, {"conditioning.tokenizer.eos_id", k.eos_id()},
      {"conditioning.tokenizer.pad_id", k.pad_id()}, {"conditioning.tokenizer.unk_id", k.unk_id()}};
  for (const auto& [field, id] : ids) {
    if (id < -1 || id > kMaxId) {
      return Invalid(field, absl::StrCat("must be in [-1, ", kMaxId, "]"));
    }
  }
  t.tokenizer.max_length = k.max_length() == 0 ? 77 : k.max_length();
  if (t.tokenizer.max_length < 2 || t.tokenizer.max_length > 4096) {
    return Invalid("conditioning.tokenizer.max_length", "must be in [2, 4096]");
  }
  if (c.example_prompts_size() > kMaxExamplePrompts) {
    return Invalid("conditioning.example_prompts",
                   absl::StrCat("more than ", kMaxExamplePrompts, " prompts"));
  }
  for (int i = 0; i < c.example_prompts_size(); ++i) {
    // A client sends one as a prompt: held to a client's prompt rules
    // (noncharacters, the byte limit), and shown as it is.
    const std::string field = absl::StrCat("conditioning.example_prompts[", i, "]");
    RETURN_IF_ERROR(CheckText(c.example_prompts(i), field, kMaxPromptBytes, /*lines=*/false));
    RETURN_IF_ERROR(
        CheckClientText(absl::StrCat("manifest ", field), c.example_prompts(i), kMaxPromptBytes));
  }
  t.example_prompts.assign(c.example_prompts().begin(), c.example_prompts().end());
  return ReadExtraConditioning(c.extra(), m);
}

// conditioning: class labels, or text (ReadTextConditioning).
absl::Status ReadConditioning(const v1::ModelManifest& p, BundleManifest& m) {
  const v1::ModelManifest::Conditioning& c = p.conditioning();
  if (c.kind().empty() || c.kind() == "class") {
    m.conditioning = ConditioningKind::kClass;
  } else if (c.kind() == "text") {
    m.conditioning = ConditioningKind::kText;
  } else {
    return Invalid("conditioning.kind", "must be \"class\" or \"text\"");
  }
  if (c.has_extra() && c.kind() != "text") {
    return Invalid("conditioning.extra", "only a text model takes extra conditioning");
  }
  m.class_labels.assign(c.class_labels().begin(), c.class_labels().end());
  // A label names its class in requests: two alike would leave the second
  // out of reach.
  for (size_t i = 0; i < m.class_labels.size(); ++i) {
    const std::string field = absl::StrCat("conditioning.class_labels[", i, "]");
    RETURN_IF_ERROR(CheckLabel(m.class_labels[i], field, /*may_be_empty=*/false));
    if (std::find(m.class_labels.begin(), m.class_labels.begin() + i, m.class_labels[i]) !=
        m.class_labels.begin() + i) {
      return Invalid(field,
                     absl::StrCat(ShortQuote(m.class_labels[i]), " repeats an earlier label"));
    }
  }
  m.null_label = c.null_label();
  if (m.null_label < 0 || m.null_label > kMaxId) {
    return Invalid("conditioning.null_label", absl::StrCat("must be in [0, ", kMaxId, "]"));
  }
  // The unconditional row is no class: one that is (0 when left out) would
  // make guidance for it the identity and push every other away from it.
  if (!m.is_text() && m.null_label < static_cast<int64_t>(m.class_labels.size())) {
    return Invalid("conditioning.null_label",
                   absl::StrCat(m.null_label, " is class ", ShortQuote(m.class_labels[m.null_label]),
                                "; give an index past the ", m.class_labels.size(),
                                " classes (usually ", m.class_labels.size(), ")"));
  }
  return m.is_text() ? ReadTextConditioning(c, m) : absl::OkStatus();
}

// decoder: from latents to pixels, and the pixels' value range.
absl::Status ReadDecoder(const v1::ModelManifest& p, BundleManifest& m) {
  m.decoder_kind = p.decoder().kind().empty() ? "identity" : p.decoder().kind();
  if (m.decoder_kind != "identity" && m.decoder_kind != "torchscript") {
    return Invalid("decoder.kind", "must be identity or torchscript");
  }
  if (m.decoder_kind == "torchscript") {
    RETURN_IF_ERROR(CheckBundleFile(p.decoder().weights(), "decoder.weights"));
  }
  // The identity decoder's image is the latent itself, [C,h,w] as [h,w,C].
  if (m.decoder_kind == "identity" &&
      (m.image_shape[0] != m.latent_shape[1] || m.image_shape[1] != m.latent_shape[2] ||
       m.image_shape[2] != m.latent_shape[0])) {
    return Invalid("image_shape", "must match latent_shape for an identity decoder");
  }
  m.decoder_weights = p.decoder().weights();
  m.latent_scale = p.decoder().latent_scale() == 0 ? 1.0 : p.decoder().latent_scale();
  if (!(m.latent_scale >= kMinLatentScale && m.latent_scale <= kMaxLatentScale)) {
    return Invalid("decoder.latent_scale", absl::StrCat("must be in [", kMinLatentScale, ", ",
                                                        kMaxLatentScale, "], got ",
                                                        m.latent_scale));
  }
  if (p.decoder().value_range_size() == 2) {
    m.value_lo = p.decoder().value_range(0);
    m.value_hi = p.decoder().value_range(1);
    if (!(std::abs(m.value_lo) <= kMaxValueMagnitude &&
          std::abs(m.value_hi) <= kMaxValueMagnitude &&
          m.value_hi - m.value_lo >= kMinValueSpan)) {
      return Invalid("decoder.value_range",
                     absl::StrCat("needs lo < hi, at least ", kMinValueSpan, " apart and within ",
                                  kMaxValueMagnitude, " of 0, got [", m.value_lo, ", ",
                                  m.value_hi, "]"));
    }
  } else if (p.decoder().value_range_size() != 0) {
    return Invalid("decoder.value_range", "needs exactly [lo, hi]");
  }
  return absl::OkStatus();
}

// defaults: what a request that leaves a sampler setting unset gets.
absl::Status ReadDefaults(const v1::ModelManifest& p, BundleManifest& m) {
  const v1::ModelManifest::SamplerDefaults& d = p.defaults();
  if (d.steps() != 0) m.defaults.steps = d.steps();
  if (m.defaults.steps < 1 || m.defaults.steps > m.schedule.train_timesteps) {
    return Invalid("defaults.steps", "must be in [1, train_timesteps]");
  }
  // What a request that leaves a setting unset gets: a default the sampler
  // would refuse in a request fails every such request.
  if (!(d.eta() >= 0 && d.eta() <= 1)) {
    return Invalid("defaults.eta", absl::StrCat("must be in [0, 1], got ", d.eta()));
  }
  m.defaults.eta = static_cast<float>(d.eta());
  if (!(d.guidance() >= 0 && d.guidance() <= kMaxGuidance)) {
    return Invalid("defaults.guidance",
                   absl::StrCat("must be in [0, ", kMaxGuidance, "], got ", d.guidance()));
  }
  m.defaults.guidance = d.guidance() != 0 ? static_cast<float>(d.guidance()) : 1.0f;
  if (d.spacing() == "trailing") {
    m.defaults.spacing = Spacing::kTrailing;
  } else if (d.spacing() == "linspace") {
    m.defaults.spacing = Spacing::kLinspace;
  } else if (!d.spacing().empty() && d.spacing() != "leading") {
    return Invalid("defaults.spacing", "must be \"leading\", \"trailing\" or \"linspace\"");
  }
  if (const std::string problem =
          TimestepsProblem(m.schedule.train_timesteps, m.defaults.steps, m.defaults.spacing,
                           m.schedule.steps_offset);
      !problem.empty()) {
    return Invalid("defaults.steps", problem);
  }
  return absl::OkStatus();
}

absl::StatusOr<BundleManifest> FromProto(const v1::ModelManifest& p) {
  BundleManifest m;
  RETURN_IF_ERROR(CheckLabel(p.name(), "name", /*may_be_empty=*/false));
  RETURN_IF_ERROR(CheckLabel(p.version(), "version", /*may_be_empty=*/true));
  m.name = p.name();
  m.version = p.version();
  RETURN_IF_ERROR(CheckText(p.description(), "description", kMaxDescriptionBytes,
                            /*lines=*/true));
  RETURN_IF_ERROR(CheckText(p.data().license(), "data.license", kMaxJudgeText, /*lines=*/false));
  m.description = p.description();
  RETURN_IF_ERROR(ReadShapesAndWeights(p, m));
  RETURN_IF_ERROR(ReadSchedule(p, m));
  RETURN_IF_ERROR(ReadConditioning(p, m));
  RETURN_IF_ERROR(ReadDecoder(p, m));
  RETURN_IF_ERROR(ReadDefaults(p, m));
  m.license = p.data().license();
  m.classifier = p.classifier();
  if (!m.classifier.empty()) RETURN_IF_ERROR(CheckBundleFile(m.classifier, "classifier"));
  // A guided trajectory runs as two rows of one pass, and its image and x0
  // preview decode together: a bundle checked at batch 1 alone cannot serve.
  if (p.max_batch() < 0 || p.max_batch() == 1 || p.max_batch() > 65536) {
    return Invalid("max_batch", "must be 0 (any) or in [2, 65536]");
  }
  m.max_batch = p.max_batch();
  if (p.has_judge()) {
    ASSIGN_OR_RETURN(m.judge, JudgeFromProto(p.judge()));
  }
  return m;
}

// Every file the manifest names is a regular file inside the bundle folder,
// once links are followed: the loaders then read only what the bundle holds.
absl::Status CheckParts(const BundleManifest& m, const std::string& bundle_dir) {
  std::vector<std::pair<const char*, std::string>> parts = {{"weights", m.weights}};
  if (m.decoder_kind == "torchscript") parts.push_back({"decoder.weights", m.decoder_weights});
  if (m.judge.present()) parts.push_back({"judge.weights", m.judge.weights});
  if (!m.classifier.empty()) parts.push_back({"classifier", m.classifier});
  if (m.is_text()) {
    parts.push_back({"conditioning.text_encoder.weights", m.text.encoder_weights});
    parts.push_back({"conditioning.tokenizer.vocab", m.text.tokenizer.vocab});
    if (!m.text.tokenizer.merges.empty()) {
      parts.push_back({"conditioning.tokenizer.merges", m.text.tokenizer.merges});
    }
  }
  for (const auto& [field, relative] : parts) {
    RETURN_IF_ERROR(ResolveBundleFile(bundle_dir, relative, field).status());
  }
  return absl::OkStatus();
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
    // Protobuf quotes the text around the error: keep that to a short,
    // escaped piece, whatever file was read.
    constexpr size_t kMaxMessage = 200;
    const absl::string_view message(status.message().data(), status.message().size());
    return absl::InvalidArgumentError(
        absl::StrCat("manifest.json: ", absl::CHexEscape(message.substr(0, kMaxMessage)),
                     message.size() > kMaxMessage ? "…" : ""));
  }
  return FromProto(proto);
}

absl::StatusOr<BundleManifest> ReadManifest(const std::string& bundle_dir) {
  const std::string path = bundle_dir + "/manifest.json";
  absl::StatusOr<BundleManifest> manifest = [&]() -> absl::StatusOr<BundleManifest> {
    ASSIGN_OR_RETURN(const std::string resolved,
                     ResolveBundleFile(bundle_dir, "manifest.json", "manifest.json"));
    ASSIGN_OR_RETURN(const std::string text, ReadRegularFile(resolved, kMaxManifestBytes));
    ASSIGN_OR_RETURN(BundleManifest parsed, ParseManifestJson(text));
    RETURN_IF_ERROR(CheckParts(parsed, bundle_dir));
    return parsed;
  }();
  if (!manifest.ok()) {
    return absl::Status(manifest.status().code(),
                        absl::StrCat(path, ": ", manifest.status().message()));
  }
  return manifest;
}

}  // namespace dgrid
