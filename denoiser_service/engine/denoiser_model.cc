#include "denoiser_service/engine/denoiser_model.h"

#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/script.h>

#include <dlfcn.h>
#include <malloc.h>

#include <algorithm>
#include <cmath>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/bundle_files.h"
#include "common/manifest_reader.h"
#include "common/png_image.h"
#include "common/status_macros.h"
#include "denoiser_service/engine/script_loading.h"
#include "denoiser_service/text/tokenizer.h"

namespace dgrid {

struct DenoiserModel::Impl {
  torch::jit::script::Module denoiser;
  std::optional<torch::jit::script::Module> decoder;
  std::optional<torch::jit::script::Module> text_encoder;
  std::unique_ptr<Tokenizer> tokenizer;
  torch::Device device = torch::kCPU;
};

namespace {

// Runs a denoiser with the given inputs and copies its output out, checking
// its size. c10::Error becomes a Status.
absl::Status RunDenoiser(torch::jit::script::Module& denoiser, std::vector<c10::IValue> inputs,
                         int64_t expected_numel, absl::Span<float> out) {
  torch::jit::IValue result = denoiser.forward(std::move(inputs));
  if (!result.isTensor()) return absl::InternalError("model forward did not return a tensor");
  torch::Tensor eps = result.toTensor();
  if (eps.numel() != expected_numel) {
    return absl::InternalError(absl::StrCat("model returned ", ShapeOf(eps), " (", eps.numel(),
                                            " elements), expected ", expected_numel));
  }
  eps = eps.to(torch::kCPU, torch::kFloat32).contiguous();
  std::memcpy(out.data(), eps.data_ptr<float>(), sizeof(float) * eps.numel());
  return absl::OkStatus();
}

// The text encoder's inputs for padded ids: the ids, and for a model with a
// second tokenizer padding (SDXL) the same tokens padded with its pad id
// after the first EOS.
std::vector<c10::IValue> EncoderInputs(const torch::Tensor& tokens, const TextConditioning& t) {
  if (t.second_pad_id < 0) return {tokens};
  const torch::Tensor eos = tokens == t.tokenizer.eos_id;
  const torch::Tensor after_eos = (eos.cumsum(1) - eos.to(torch::kLong)) > 0;
  return {tokens, torch::where(after_eos, torch::full_like(tokens, t.second_pad_id), tokens)};
}

// The encoder's (context, pooled) from its result: a tensor, or a tuple
// whose first element is the context and second the pooled embedding.
absl::Status SplitEncoderResult(const c10::IValue& result, torch::Tensor* context,
                                torch::Tensor* pooled) {
  if (!result.isTuple()) {
    *context = result.toTensor();
    return absl::OkStatus();
  }
  const auto& elements = result.toTuple()->elements();
  if (elements.empty() || !elements[0].isTensor()) {
    return absl::InvalidArgumentError(
        "the text encoder returns a tuple whose first element is not a tensor (the context)");
  }
  *context = elements[0].toTensor();
  if (elements.size() > 1 && elements[1].isTensor()) *pooled = elements[1].toTensor();
  return absl::OkStatus();
}

}  // namespace

DenoiserModel::DenoiserModel(BundleManifest manifest, std::unique_ptr<Impl> impl,
                             std::string device)
    : manifest_(std::move(manifest)), impl_(std::move(impl)), device_(std::move(device)) {}

DenoiserModel::~DenoiserModel() = default;

absl::StatusOr<std::unique_ptr<DenoiserModel>> DenoiserModel::Load(
    const std::string& bundle_dir, const ModelLoadOptions& options) {
  absl::StatusOr<BundleManifest> manifest = ReadManifest(bundle_dir);
  if (!manifest.ok()) return manifest.status();
  // The profiling executor re-specialises (and on CPU may re-fuse) a graph
  // for every new input shape. Continuous batching changes the batch size
  // from one iteration to the next, so that would stall the engine again and
  // again; the plain executor runs the same ops with no warm-up.
  torch::jit::getProfilingMode() = false;
  torch::jit::setGraphExecutorOptimize(false);
  auto impl = std::make_unique<Impl>();
  const bool cuda = torch::cuda::is_available();
  if (options.device == "cuda" && !cuda) {
    return absl::FailedPreconditionError("--device=cuda, but this LibTorch has no usable GPU");
  }
  if (options.device != "auto" && options.device != "cpu" && options.device != "cuda") {
    return absl::InvalidArgumentError("--device must be auto, cpu or cuda");
  }
  const bool use_cuda = options.device == "cuda" || (options.device == "auto" && cuda);
  impl->device = use_cuda ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);

  absl::StatusOr<torch::jit::script::Module> denoiser =
      LoadScript(bundle_dir + "/" + manifest->weights, impl->device);
  if (!denoiser.ok()) return denoiser.status();
  impl->denoiser = std::move(*denoiser);
  if (manifest->decoder_kind == "torchscript") {
    absl::StatusOr<torch::jit::script::Module> decoder =
        LoadScript(bundle_dir + "/" + manifest->decoder_weights, impl->device);
    if (!decoder.ok()) return decoder.status();
    impl->decoder = std::move(*decoder);
  }
  if (manifest->is_text()) {
    const TextConditioning& text = manifest->text;
    absl::StatusOr<torch::jit::script::Module> encoder =
        LoadScript(bundle_dir + "/" + text.encoder_weights, impl->device);
    if (!encoder.ok()) return encoder.status();
    impl->text_encoder = std::move(*encoder);
    absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
        LoadTokenizer(SpecForBundle(text.tokenizer, bundle_dir));
    if (!tokenizer.ok()) return tokenizer.status();
    impl->tokenizer = std::move(*tokenizer);
    // Offered to clients as prompts: held to every rule a prompt is (the
    // manifest reader, without ICU, checks all but the combining marks).
    for (size_t i = 0; i < text.example_prompts.size(); ++i) {
      RETURN_IF_ERROR(CheckPromptText(
          absl::StrCat("manifest conditioning.example_prompts[", i, "]"), text.example_prompts[i]));
    }
  }
  auto model = std::unique_ptr<DenoiserModel>(
      new DenoiserModel(std::move(*manifest), std::move(impl), use_cuda ? "cuda" : "cpu"));
  if (absl::Status probe = model->Probe(bundle_dir); !probe.ok()) return probe;
  if (absl::Status probe = model->ProbeRanges(bundle_dir); !probe.ok()) return probe;
  return model;
}

// A bundle whose signatures or shapes are wrong fails at load, with the file
// and the shapes named, not on the first request.
absl::Status DenoiserModel::Probe(const std::string& dir) {
  const BundleManifest& m = manifest_;
  const int64_t numel = latent_numel();
  std::vector<float> x(numel, 0.0f), out(numel);
  const float t = m.schedule.train_timesteps / 2;
  absl::Status probe;
  if (m.is_text()) {
    RETURN_IF_ERROR(ProbeText(dir));
  } else {
    const int64_t cond = m.null_label;
    probe = Forward(x, {&t, 1}, {&cond, 1}, 1, absl::MakeSpan(out));
    if (!probe.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(dir, "/", m.weights, ": probe forward with null_label ", cond, " (",
                       m.class_labels.size(), " class_labels) failed: ", probe.message()));
    }
  }
  // Two latents, as the engine decodes them batched: a decoder that works
  // for one alone (a reshape to [1, ...]) failed only on requests.
  if (impl_->decoder) {
    std::vector<float> two(2 * numel, 0.0f);
    absl::StatusOr<std::vector<uint8_t>> image = Decode(two, 2);
    if (!image.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(dir, "/", m.decoder_weights, ": probe decode of latents [2, ",
                       m.latent_shape[0], ", ", m.latent_shape[1], ", ", m.latent_shape[2],
                       "] failed: ", image.status().message()));
    }
  }
  return absl::OkStatus();
}

absl::Status DenoiserModel::ProbeText(const std::string& dir) {
  const BundleManifest& m = manifest_;
  const TextConditioning& text = m.text;
  const int length = context_length();
  std::vector<int64_t> ids = impl_->tokenizer->Padded(impl_->tokenizer->Encode(""));
  if (ids.size() != static_cast<size_t>(length)) {
    // Every prompt must fill the encoder's max_length ids: no padding
    // (pad_id -1) leaves a prompt short, and a batch of prompts misaligned.
    return absl::InvalidArgumentError(absl::StrCat(
        dir, "/manifest.json: conditioning.tokenizer.pad_id: the empty prompt pads to ",
        ids.size(), " ids, not ", length, " (max_length); a model's tokenizer must pad"));
  }
  // The second encoder embeds it as a token (SDXL's padding).
  if (text.second_pad_id >= impl_->tokenizer->vocab_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        dir, "/manifest.json: conditioning.extra.second_pad_id ", text.second_pad_id,
        " is outside the ", impl_->tokenizer->vocab_size(), " ids of ", dir, "/",
        text.tokenizer.vocab));
  }
  const std::string encoder = absl::StrCat(dir, "/", text.encoder_weights);
  // The encoder's own output shapes, before ForwardText relies on them.
  try {
    c10::InferenceMode guard;
    torch::Tensor tokens =
        torch::from_blob(ids.data(), {1, length}, torch::kInt64).to(impl_->device);
    torch::Tensor context, pooled;
    RETURN_IF_ERROR(SplitEncoderResult(
        impl_->text_encoder->forward(EncoderInputs(tokens, text)), &context, &pooled));
    if (context.dim() != 3 || context.size(0) != 1 || context.size(1) != length ||
        context.size(2) != text.context_dim) {
      return absl::InvalidArgumentError(absl::StrCat(
          encoder, ": the text encoder gives context ", ShapeOf(context), " for ids [1, ", length,
          "]; the manifest's tokenizer.max_length and text_encoder.context_dim say [1, ", length,
          ", ", text.context_dim, "]"));
    }
    if (text.pooled_dim > 0 &&
        (!pooled.defined() || pooled.dim() != 2 || pooled.size(0) != 1 ||
         pooled.size(1) != text.pooled_dim)) {
      return absl::InvalidArgumentError(absl::StrCat(
          encoder, ": the text encoder gives pooled ",
          pooled.defined() ? ShapeOf(pooled) : std::string("nothing"),
          "; the manifest's extra.pooled_dim says a tuple (context, pooled [1, ",
          text.pooled_dim, "])"));
    }
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(encoder, ": probe failed: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(encoder, ": probe failed: ", ShortText(e.what())));
  }
  std::vector<float> encoding(encoding_size());
  RETURN_IF_ERROR(EncodeText(ids, 1, absl::MakeSpan(encoding)));
  const int64_t numel = latent_numel();
  std::vector<float> x(numel, 0.0f), out(numel);
  const float t = m.schedule.train_timesteps / 2;
  const std::array<float, 6> time_ids = TimeIds({});
  const absl::Status probe =
      ForwardText(x, {&t, 1}, encoding, text.size_ids ? absl::MakeConstSpan(time_ids)
                                                      : absl::Span<const float>(),
                  1, absl::MakeSpan(out));
  if (!probe.ok()) {
    const std::string pooled =
        text.pooled_dim > 0 ? absl::StrCat(", pooled [1, ", text.pooled_dim, "]") : "";
    return absl::InvalidArgumentError(absl::StrCat(
        dir, "/", m.weights, ": probe forward with latent [1, ", m.latent_shape[0], ", ",
        m.latent_shape[1], ", ", m.latent_shape[2], "] and context [1, ", length, ", ",
        context_dim(), "]", pooled, text.size_ids ? ", time_ids [1, 6]" : "", " failed: ",
        probe.message()));
  }
  return absl::OkStatus();
}

// What a request can give goes through the model once, at its extremes: the
// highest token id the tokenizer can produce, the last class index, the first
// and last training timestep. A bundle whose vocabulary outgrows its encoder's
// embedding would otherwise load and then fail at request time.
absl::Status DenoiserModel::ProbeRanges(const std::string& dir) {
  const BundleManifest& m = manifest_;
  const int64_t numel = latent_numel();
  std::vector<float> x(2 * numel, 0.0f), out(2 * numel);
  const std::vector<float> t = {0.0f, m.schedule.train_timesteps - 1.0f};
  const std::string where = absl::StrCat("timesteps 0 and ", t[1]);
  absl::Status probe;
  if (m.is_text()) {
    const int length = context_length();
    const int64_t top = impl_->tokenizer->vocab_size() - 1;
    const std::vector<int64_t> ids(2 * length, top);
    std::vector<float> encodings(2 * encoding_size());
    if (absl::Status s = EncodeText(ids, 2, absl::MakeSpan(encodings)); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          dir, "/", m.text.encoder_weights, ": the text encoder fails on token id ", top,
          ", the highest of the vocabulary ", dir, "/", m.text.tokenizer.vocab, " (",
          top + 1, " ids): ", s.message()));
    }
    std::vector<float> time_ids;
    if (m.text.size_ids) {
      const std::array<float, 6> row = TimeIds({});
      for (int b = 0; b < 2; ++b) time_ids.insert(time_ids.end(), row.begin(), row.end());
    }
    probe = ForwardText(x, t, encodings, time_ids, 2, absl::MakeSpan(out));
  } else {
    const int64_t last = static_cast<int64_t>(m.class_labels.size()) - 1;
    const std::vector<int64_t> cond = {m.null_label, last >= 0 ? last : m.null_label};
    probe = Forward(x, t, cond, 2, absl::MakeSpan(out));
    if (!probe.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          dir, "/", m.weights, ": probe forward at ", where, " with class indices ",
          absl::StrJoin(cond, " and "), " (", m.class_labels.size(),
          " class_labels, null_label ", m.null_label, ") failed: ", probe.message()));
    }
  }
  if (!probe.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(dir, "/", m.weights, ": probe forward at ",
                                                   where, " failed: ", probe.message()));
  }
  return absl::OkStatus();
}

const Tokenizer* DenoiserModel::tokenizer() const { return impl_->tokenizer.get(); }

int DenoiserModel::context_length() const {
  return manifest_.is_text() ? manifest_.text.tokenizer.max_length : 0;
}

size_t DenoiserModel::encoding_size() const {
  if (!manifest_.is_text()) return 0;
  return static_cast<size_t>(context_length()) * context_dim() + manifest_.text.pooled_dim;
}

std::array<float, 6> DenoiserModel::TimeIds(const SizeConditioning& size) const {
  const auto fields = size.WithDefaults(manifest_.text.DefaultSize()).Fields();
  std::array<float, 6> ids;
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<float>(fields[i].second);
  return ids;
}

absl::Status DenoiserModel::EncodeText(absl::Span<const int64_t> ids, int batch,
                                       absl::Span<float> encodings) {
  if (!impl_->text_encoder) return absl::FailedPreconditionError("not a text model");
  InitThreads();
  const int length = context_length();
  const size_t want = static_cast<size_t>(batch) * length;
  const size_t per = encoding_size();
  if (ids.size() != want || encodings.size() != batch * per) {
    return absl::InvalidArgumentError(absl::StrCat(
        "EncodeText: ", ids.size(), " ids and room for ", encodings.size(), " floats; batch ",
        batch, " needs ", want, " padded ids and ", batch * per, " floats"));
  }
  try {
    c10::InferenceMode guard;
    torch::Tensor tokens =
        torch::from_blob(const_cast<int64_t*>(ids.data()), {batch, length}, torch::kInt64)
            .to(impl_->device);
    torch::Tensor context, pooled;
    RETURN_IF_ERROR(SplitEncoderResult(
        impl_->text_encoder->forward(EncoderInputs(tokens, manifest_.text)), &context, &pooled));
    const int64_t context_numel = static_cast<int64_t>(length) * context_dim();
    if (context.numel() != batch * context_numel) {
      return absl::InternalError(absl::StrCat("text encoder returned ", ShapeOf(context),
                                              ", expected [", batch, ", ", length, ", ",
                                              context_dim(), "]"));
    }
    const int pooled_dim = manifest_.text.pooled_dim;
    if (pooled_dim > 0 && (!pooled.defined() || pooled.numel() != batch * pooled_dim)) {
      return absl::InternalError(absl::StrCat(
          "text encoder returned pooled ", pooled.defined() ? ShapeOf(pooled) : "nothing",
          ", expected [", batch, ", ", pooled_dim, "]"));
    }
    // Each prompt's row: its context, then its pooled embedding.
    torch::Tensor rows = context.reshape({batch, context_numel});
    if (pooled_dim > 0) rows = torch::cat({rows, pooled.reshape({batch, pooled_dim})}, 1);
    rows = rows.to(torch::kCPU, torch::kFloat32).contiguous();
    std::memcpy(encodings.data(), rows.data_ptr<float>(), sizeof(float) * rows.numel());
    return absl::OkStatus();
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("text encoder: ", e.what_without_backtrace()));
  }
  catch (const std::exception& e) {  // the TorchScript interpreter's own errors
    return absl::InternalError(absl::StrCat("text encoder: ", ShortText(e.what())));
  }
}

absl::Status DenoiserModel::ForwardText(absl::Span<const float> x, absl::Span<const float> t,
                                        absl::Span<const float> encodings,
                                        absl::Span<const float> time_ids, int batch,
                                        absl::Span<float> out) {
  return RunForward(x, t, {}, encodings, time_ids, batch, out);
}

absl::Status DenoiserModel::Forward(absl::Span<const float> x, absl::Span<const float> t,
                                    absl::Span<const int64_t> cond, int batch,
                                    absl::Span<float> out) {
  return RunForward(x, t, cond, {}, {}, batch, out);
}

absl::Status DenoiserModel::RunForward(absl::Span<const float> x, absl::Span<const float> t,
                                       absl::Span<const int64_t> cond,
                                       absl::Span<const float> encodings,
                                       absl::Span<const float> time_ids, int batch,
                                       absl::Span<float> out) {
  const std::vector<int64_t>& ls = manifest_.latent_shape;
  InitThreads();
  try {
    c10::InferenceMode guard;
    // from_blob views: no copy on the CPU path.
    torch::Tensor xt = torch::from_blob(const_cast<float*>(x.data()),
                                        {batch, ls[0], ls[1], ls[2]}, torch::kFloat32);
    torch::Tensor tt = torch::from_blob(const_cast<float*>(t.data()), {batch}, torch::kFloat32);
    if (!manifest_.timestep_is_float) tt = tt.to(torch::kInt64);
    std::vector<torch::Tensor> inputs = {xt, tt};
    if (!manifest_.is_text()) {
      // The third input: class indices.
      inputs.push_back(
          torch::from_blob(const_cast<int64_t*>(cond.data()), {batch}, torch::kInt64));
    } else {
      // A text model's: the context, then SDXL's pooled embedding and
      // time_ids. Views of each row's encoding: no copy.
      const TextConditioning& text = manifest_.text;
      const int64_t per = static_cast<int64_t>(encoding_size());
      const int64_t context_numel = per - text.pooled_dim;
      if (static_cast<int64_t>(encodings.size()) != batch * per ||
          (text.size_ids && static_cast<int64_t>(time_ids.size()) != batch * 6)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "ForwardText: ", encodings.size(), " encoding and ", time_ids.size(),
            " time_ids floats for batch ", batch));
      }
      torch::Tensor rows =
          torch::from_blob(const_cast<float*>(encodings.data()), {batch, per}, torch::kFloat32);
      inputs.push_back(
          rows.narrow(1, 0, context_numel).view({batch, context_length(), context_dim()}));
      if (text.pooled_dim > 0) inputs.push_back(rows.narrow(1, context_numel, text.pooled_dim));
      if (text.size_ids) {
        inputs.push_back(
            torch::from_blob(const_cast<float*>(time_ids.data()), {batch, 6}, torch::kFloat32));
      }
    }
    std::vector<c10::IValue> values;
    for (torch::Tensor& input : inputs) {
      values.push_back(impl_->device.is_cpu() ? input
                                              : input.to(impl_->device, /*non_blocking=*/true));
    }
    return RunDenoiser(impl_->denoiser, std::move(values),
                       static_cast<int64_t>(batch) * latent_numel(), out);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("model forward: ", e.what_without_backtrace()));
  }
  catch (const std::exception& e) {  // the TorchScript interpreter's own errors
    return absl::InternalError(absl::StrCat("model forward: ", ShortText(e.what())));
  }
}

absl::StatusOr<std::vector<uint8_t>> DenoiserModel::Decode(absl::Span<const float> latents,
                                                           int batch,
                                                           std::vector<char>* non_finite) {
  if (non_finite) non_finite->assign(batch, 0);
  const int channels = static_cast<int>(manifest_.image_shape[2]);
  const int64_t image_numel = manifest_.ImageNumel();
  std::vector<uint8_t> pixels;
  pixels.reserve(batch * image_numel);
  if (!impl_->decoder) {
    const int64_t n = latent_numel();
    if (n != image_numel) {  // the manifest reader refuses such a bundle
      return absl::InternalError("the identity decoder needs image_shape to match latent_shape");
    }
    std::vector<float> scaled;
    if (manifest_.latent_scale != 1.0) {
      scaled.assign(latents.begin(), latents.end());
      for (float& v : scaled) v = static_cast<float>(v / manifest_.latent_scale);
      latents = scaled;
    }
    for (int b = 0; b < batch; ++b) {
      std::vector<uint8_t> px = ToPixels(latents.subspan(b * n, n), channels,
                                         manifest_.value_lo, manifest_.value_hi);
      pixels.insert(pixels.end(), px.begin(), px.end());
    }
    return pixels;
  }
  InitThreads();
  try {
    c10::InferenceMode guard;
    const std::vector<int64_t>& ls = manifest_.latent_shape;
    torch::Tensor x = torch::from_blob(const_cast<float*>(latents.data()),
                                       {batch, ls[0], ls[1], ls[2]}, torch::kFloat32)
                          .to(impl_->device);
    if (manifest_.latent_scale != 1.0) x = x / manifest_.latent_scale;
    torch::Tensor img = impl_->decoder->forward({x}).toTensor().to(torch::kCPU, torch::kFloat32);
    // [B, C, H, W] exactly: the same count of values in another layout (H
    // and W swapped, channels last) would scramble every image.
    const std::vector<int64_t>& is = manifest_.image_shape;  // H, W, C
    if (img.sizes() != c10::IntArrayRef({batch, is[2], is[0], is[1]})) {
      return absl::InternalError(absl::StrCat(
          "decoder gives ", ShapeOf(img), " but the manifest's image_shape [",
          absl::StrJoin(is, ", "), "] needs [", batch, ", ", is[2], ", ", is[0], ", ", is[1],
          "] (batch, channels, height, width)"));
    }
    img = img.contiguous();
    const int64_t n = image_numel;
    // Pixels from NaN would come back as black, OK: flag them, or fail.
    for (int b = 0; b < batch; ++b) {
      const float* values = img.data_ptr<float>() + b * n;
      if (std::all_of(values, values + n, [](float v) { return std::isfinite(v); })) continue;
      if (!non_finite) {
        return absl::InternalError("the decoder produced non-finite pixels (NaN or Inf)");
      }
      (*non_finite)[b] = 1;
    }
    for (int b = 0; b < batch; ++b) {
      std::vector<uint8_t> px =
          ToPixels({img.data_ptr<float>() + b * n, static_cast<size_t>(n)}, channels,
                   manifest_.value_lo, manifest_.value_hi);
      pixels.insert(pixels.end(), px.begin(), px.end());
    }
    return pixels;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("decoder: ", e.what_without_backtrace()));
  }
  catch (const std::exception& e) {  // the TorchScript interpreter's own errors
    return absl::InternalError(absl::StrCat("decoder: ", ShortText(e.what())));
  }
}

int SetTorchThreads(int threads) {
  if (threads > 0) at::set_num_threads(threads);
  // Debian's LibTorch calls OpenBLAS (pthread build) for its small matrix
  // products. OpenBLAS's idle workers spin in sched_yield between calls, and
  // with a forward every few milliseconds they never sleep: profiled here, one
  // such worker took a third of the denoiser's CPU time on a 2-core machine.
  // Torch's own threads do the parallel work, so OpenBLAS runs on the caller.
  // Looked up at run time: the symbol is absent with other BLAS builds.
  using SetBlasThreads = void (*)(int);
  if (auto set = reinterpret_cast<SetBlasThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    set(1);
  }
  // Each forward allocates and frees activations of a few MB. Above glibc's
  // mmap threshold every one of them is a fresh mapping, and its page faults
  // (with cgroup accounting) cost about a tenth of a forward here; keep
  // freed memory in the heap instead. Bounded by the largest batch's needs.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  return at::get_num_threads();
}

}  // namespace dgrid
