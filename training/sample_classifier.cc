#include "sample_classifier.h"

#include <torch/script.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace dgrid::training {

struct SampleClassifier::Impl {
  torch::jit::script::Module module;
};

SampleClassifier::SampleClassifier(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SampleClassifier::~SampleClassifier() = default;

absl::StatusOr<std::unique_ptr<SampleClassifier>> SampleClassifier::Load(const std::string& path) {
  if (!std::filesystem::exists(path)) {
    return absl::NotFoundError(absl::StrCat("classifier not found: ", path));
  }
  auto impl = std::make_unique<Impl>();
  try {
    impl->module = torch::jit::load(path, torch::kCPU);
    impl->module.eval();
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot load classifier ", path, ": ", e.what_without_backtrace()));
  }
  return std::unique_ptr<SampleClassifier>(new SampleClassifier(std::move(impl)));
}

absl::StatusOr<Classified> SampleClassifier::Classify(absl::Span<const uint8_t> pixels, int64_t n,
                                                      int height, int width) {
  const int64_t numel = static_cast<int64_t>(height) * width;
  if (n <= 0 || static_cast<int64_t>(pixels.size()) != n * numel) {
    return absl::InvalidArgumentError(absl::StrCat("classify: ", pixels.size(), " bytes are not ",
                                                   n, " images of ", height, "x", width));
  }
  constexpr int64_t kBatch = 500;
  Classified out;
  out.labels.reserve(n);
  try {
    c10::InferenceMode guard;
    for (int64_t begin = 0; begin < n; begin += kBatch) {
      const int64_t b = std::min(kBatch, n - begin);
      // As the classifier was trained: x / 127.5 - 1.
      torch::Tensor img = torch::from_blob(const_cast<uint8_t*>(pixels.data()) + begin * numel,
                                           {b, 1, height, width}, torch::kUInt8)
                              .to(torch::kFloat32)
                              .mul_(2.0 / 255.0)
                              .sub_(1.0);
      torch::jit::IValue result = impl_->module.forward({img});
      if (!result.isTuple() || result.toTuple()->elements().size() != 2) {
        return absl::InvalidArgumentError("classifier must return (logits, features)");
      }
      torch::Tensor logits = result.toTuple()->elements()[0].toTensor();
      torch::Tensor features =
          result.toTuple()->elements()[1].toTensor().to(torch::kFloat32).contiguous();
      if (logits.dim() != 2 || features.dim() != 2 || logits.size(0) != b ||
          features.size(0) != b) {
        return absl::InvalidArgumentError("classifier outputs must be [B,K] and [B,D]");
      }
      torch::Tensor labels = logits.argmax(1).to(torch::kInt64).contiguous();
      const int64_t* l = labels.data_ptr<int64_t>();
      for (int64_t i = 0; i < b; ++i) out.labels.push_back(static_cast<int>(l[i]));
      out.feature_dim = static_cast<int>(features.size(1));
      const float* f = features.data_ptr<float>();
      out.features.insert(out.features.end(), f, f + features.numel());
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("classifier: ", e.what_without_backtrace()));
  }
  return out;
}

}  // namespace dgrid::training
