#include "denoiser_service/engine/image_judge.h"

#include <torch/script.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "denoiser_service/engine/script_loading.h"

namespace dgrid {

struct ImageJudge::Impl {
  torch::jit::script::Module module;
  torch::Device device = torch::kCPU;
};

namespace {

// The element of the module's output that holds head `output`'s logits.
absl::StatusOr<torch::Tensor> HeadLogits(const torch::jit::IValue& result, int output) {
  if (result.isTensor()) {
    if (output == 0) return result.toTensor();
    return absl::InvalidArgumentError(
        absl::StrCat("the judge returns one tensor, but the head reads output ", output));
  }
  if (!result.isTuple()) {
    return absl::InvalidArgumentError("the judge returns neither a tensor nor a tuple");
  }
  const auto& elements = result.toTuple()->elements();
  if (output >= static_cast<int>(elements.size()) || !elements[output].isTensor()) {
    return absl::InvalidArgumentError(absl::StrCat("the judge returns ", elements.size(),
                                                   " outputs; output ", output,
                                                   " is not a tensor"));
  }
  return elements[output].toTensor();
}

}  // namespace

ImageJudge::ImageJudge(const BundleManifest& manifest, std::unique_ptr<Impl> impl)
    : spec_(manifest.judge),
      image_shape_(manifest.image_shape),
      value_lo_(manifest.value_lo),
      value_hi_(manifest.value_hi),
      impl_(std::move(impl)) {}

ImageJudge::~ImageJudge() = default;

absl::StatusOr<std::unique_ptr<ImageJudge>> ImageJudge::Load(const std::string& bundle_dir,
                                                             const BundleManifest& manifest,
                                                             const std::string& device) {
  if (!manifest.judge.present()) {
    return absl::FailedPreconditionError(absl::StrCat(manifest.name, " has no judge"));
  }
  auto impl = std::make_unique<Impl>();
  impl->device = device == "cuda" ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  const std::string path = bundle_dir + "/" + manifest.judge.weights;
  absl::StatusOr<torch::jit::script::Module> module = LoadScript(path, impl->device);
  if (!module.ok()) return module.status();
  impl->module = std::move(*module);
  std::unique_ptr<ImageJudge> judge(new ImageJudge(manifest, std::move(impl)));
  // Two blank images, as Judge calls batch them: every head must come back
  // as [2, len(labels)] (a judge that always answered [1, K] failed only on
  // requests).
  std::vector<uint8_t> blank(2 * manifest.ImageNumel(), 0);
  if (absl::StatusOr<std::vector<ImageVerdict>> probe = judge->Judge(blank, 2); !probe.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": probe of the judge on two images [2, ", manifest.image_shape[2],
                     ", ", manifest.image_shape[0], ", ", manifest.image_shape[1],
                     "] failed: ", probe.status().message()));
  }
  return judge;
}

absl::StatusOr<std::vector<ImageVerdict>> ImageJudge::Judge(absl::Span<const uint8_t> pixels,
                                                         int batch) const {
  const int64_t h = image_shape_[0], w = image_shape_[1], c = image_shape_[2];
  if (batch < 1 || pixels.size() != static_cast<size_t>(batch * h * w * c)) {
    return absl::InvalidArgumentError(absl::StrCat("Judge: ", pixels.size(), " bytes for ", batch,
                                                   " images of ", h * w * c, " bytes"));
  }
  InitThreads();
  std::vector<ImageVerdict> out;
  out.reserve(batch);
  try {
    c10::InferenceMode guard;
    // [B, H, W, C] bytes to [B, C, H, W] in the decoder's value range.
    torch::Tensor x = torch::from_blob(const_cast<uint8_t*>(pixels.data()), {batch, h, w, c},
                                       torch::kUInt8)
                          .permute({0, 3, 1, 2})
                          .to(torch::kFloat32)
                          .mul(static_cast<float>((value_hi_ - value_lo_) / 255.0))
                          .add(static_cast<float>(value_lo_))
                          .contiguous();
    if (!impl_->device.is_cpu()) x = x.to(impl_->device);
    const torch::jit::IValue result = impl_->module.forward({x});
    std::vector<torch::Tensor> probabilities;
    for (size_t i = 0; i < spec_.heads.size(); ++i) {
      const JudgeHead& head = spec_.heads[i];
      absl::StatusOr<torch::Tensor> logits = HeadLogits(result, head.output);
      if (!logits.ok()) {
        return absl::InternalError(
            absl::StrCat("judge.heads[", i, "] (", head.name, "): ", logits.status().message()));
      }
      const int64_t k = static_cast<int64_t>(head.labels.size());
      if (logits->dim() != 2 || logits->size(0) != batch || logits->size(1) != k) {
        return absl::InternalError(absl::StrCat("judge.heads[", i, "] (", head.name,
                                                "): output ", head.output, " is ",
                                                ShapeOf(*logits), ", its ", k, " labels need [",
                                                batch, ", ", k, "]"));
      }
      torch::Tensor p = torch::softmax(logits->to(torch::kCPU, torch::kFloat32), 1).contiguous();
      // A NaN logit gave a probability of NaN, answered OK: the judge's
      // fault (an image's bytes are always valid), as INTERNAL.
      const torch::Tensor finite = torch::isfinite(p).all(1);
      if (!finite.all().item<bool>()) {
        const int64_t b = (~finite).nonzero()[0][0].item<int64_t>();
        return absl::InternalError(absl::StrCat("judge.heads[", i, "] (", head.name,
                                                "): non-finite logits (NaN or Inf) for image ",
                                                b, " of ", batch));
      }
      probabilities.push_back(std::move(p));
    }
    for (int b = 0; b < batch; ++b) {
      ImageVerdict verdict;
      for (const torch::Tensor& p : probabilities) {
        const torch::Tensor row = p[b];
        const int label = static_cast<int>(row.argmax().item<int64_t>());
        verdict.push_back({label, row[label].item<float>()});
      }
      out.push_back(std::move(verdict));
    }
    return out;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("judge: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {  // the TorchScript interpreter's own errors
    return absl::InternalError(absl::StrCat("judge: ", ShortText(e.what())));
  }
}

}  // namespace dgrid
