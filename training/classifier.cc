#include "classifier.h"

#include <torch/optim/adamw.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bundle_writer.h"
#include "dataset.h"
#include "device.h"
#include "progress.h"
#include "script_net.h"

namespace dgrid::training {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr int64_t kFeatures = 128;

// conv 32 @28 -> pool -> conv 64 @14 -> pool -> conv 64 @7 -> fc 128 -> fc 10.
// About a fifth of the denoiser's cost per image, and over 90% on the test
// split: enough to judge samples, cheap enough to score thousands.
ScriptNetBuilder BuildClassifier(uint64_t seed) {
  ScriptNetBuilder b(seed, ComputeType::kFloat32);
  b.AddConv("conv1", 1, 32, 3);
  b.AddConv("conv2", 32, 64, 3);
  b.AddConv("conv3", 64, 64, 3);
  b.AddLinear("fc1", 64 * 7 * 7, kFeatures);
  b.AddLinear("fc2", kFeatures, kNumClasses);
  b.Line("h = torch.relu(" + b.Conv("x", "conv1", 1, 1) + ")");
  b.Line("h = torch.max_pool2d(h, [2, 2], [2, 2])");
  b.Line("h = torch.relu(" + b.Conv("h", "conv2", 1, 1) + ")");
  b.Line("h = torch.max_pool2d(h, [2, 2], [2, 2])");
  b.Line("h = torch.relu(" + b.Conv("h", "conv3", 1, 1) + ")");
  b.Line("return torch.relu(" + b.Linear("torch.flatten(h, 1)", "fc1") + ")");
  return b;
}

constexpr char kClassifierMethods[] = R"JIT(
def forward(self, x):
    f = self.features(x)
    return (torch.linear(f, self.fc2_w, self.fc2_b), f)

def train_logits(self, x):
    f = torch.dropout(self.features(x), 0.3, True)
    return torch.linear(f, self.fc2_w, self.fc2_b)
)JIT";

absl::StatusOr<torch::jit::Module> MakeClassifierModule(const ScriptNetBuilder& net,
                                                        const std::vector<NamedTensor>& params,
                                                        bool requires_grad) {
  return MakeScriptModule("DGridClassifier", params,
                          net.Source("def features(self, x):\n") + kClassifierMethods,
                          requires_grad);
}

double TestAccuracy(torch::jit::Module& m, const ImageDataset& test) {
  torch::NoGradGuard no_grad;
  int64_t correct = 0;
  for (int64_t a = 0; a < test.size(); a += 500) {
    const int64_t b = std::min(test.size(), a + 500);
    auto out = m.forward({ToUnitRange(test.images.slice(0, a, b))}).toTuple();
    torch::Tensor pred = out->elements()[0].toTensor().argmax(1);
    correct += pred.eq(test.labels.slice(0, a, b)).sum().item<int64_t>();
  }
  return static_cast<double>(correct) / static_cast<double>(test.size());
}

}  // namespace

absl::StatusOr<ClassifierTrainResult> TrainClassifier(const ClassifierTrainOptions& o) {
  if (o.out_dir.empty()) return absl::InvalidArgumentError("--out_dir is required");
  std::error_code ec;
  fs::create_directories(o.out_dir, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot create ", o.out_dir, ": ", ec.message()));
  torch::AutoGradMode enable_grad(true);
  const torch::Device device = ChooseDevice(o.threads);
  const std::string dir = o.data_dir.empty() ? kDefaultDataDir : o.data_dir;
  absl::StatusOr<ImageDataset> train = LoadImageDataset(dir, "train", o.limit_images, device);
  if (!train.ok()) return train.status();
  absl::StatusOr<ImageDataset> test = LoadImageDataset(dir, "t10k", 0, device);
  if (!test.ok()) return test.status();

  const ScriptNetBuilder net = BuildClassifier(o.seed);
  absl::StatusOr<torch::jit::Module> module =
      MakeClassifierModule(net, net.params(), /*requires_grad=*/true);
  if (!module.ok()) return module.status();
  module->to(device);
  std::vector<torch::Tensor> params = ModuleParameters(*module, net.params());
  torch::optim::AdamW optimizer(params, torch::optim::AdamWOptions(o.lr).weight_decay(1e-4));

  const int64_t n = train->size();
  const int64_t steps_per_epoch = n / o.batch;
  if (steps_per_epoch < 1) return absl::InvalidArgumentError("--batch exceeds the training set");
  int64_t total = steps_per_epoch * o.epochs;
  if (o.max_steps > 0) total = std::min(total, o.max_steps);
  std::fprintf(stderr, "dgrid-train classifier: %ld images, %ld steps, %ld parameters, %s\n", n,
               total, net.parameter_count(),
               HardwareDescription(device, o.threads, ComputeType::kFloat32).c_str());

  ProgressBar bar("classifier", total);
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  const auto start = Clock::now();
  auto interval_start = start;
  double interval_loss = 0;
  int interval_steps = 0;
  double accuracy = 0;
  torch::Tensor perm;
  try {
    for (int64_t step = 0; step < total; ++step) {
      const int64_t i = step % steps_per_epoch;
      if (i == 0) perm = torch::randperm(n, gen, torch::kLong).to(device);
      // Cosine decay over the run, no warmup needed at this size.
      const double lr = o.lr * 0.5 * (1 + std::cos(M_PI * static_cast<double>(step) / total));
      for (auto& group : optimizer.param_groups()) {
        static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
      }
      torch::Tensor idx = perm.slice(0, i * o.batch, (i + 1) * o.batch);
      torch::Tensor x = ToUnitRange(train->images.index_select(0, idx));
      // Random horizontal flips: a garment's class does not depend on its
      // left-right orientation.
      torch::Tensor flip = (torch::rand({o.batch}, gen) < 0.5).to(device).view({-1, 1, 1, 1});
      x = torch::where(flip, x.flip({3}), x);
      optimizer.zero_grad();
      torch::Tensor logits = module->run_method("train_logits", x).toTensor();
      torch::Tensor loss = torch::cross_entropy_loss(logits, train->labels.index_select(0, idx));
      loss.backward();
      optimizer.step();
      interval_loss += loss.item<double>();
      ++interval_steps;
      if ((step + 1) % 20 == 0) {
        const auto now = Clock::now();
        bar.Update(step + 1, interval_loss / interval_steps,
                   interval_steps * o.batch / std::chrono::duration<double>(now - interval_start).count());
        interval_loss = 0;
        interval_steps = 0;
        interval_start = now;
      }
      if ((step + 1) % steps_per_epoch == 0 || step + 1 == total) {
        accuracy = TestAccuracy(*module, *test);
        std::fprintf(stderr, "\nclassifier epoch %.2f: test accuracy %.4f\n",
                     static_cast<double>(step + 1) / steps_per_epoch, accuracy);
        interval_start = Clock::now();
      }
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("classifier training: ", e.what()));
  }
  bar.Finish();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();

  std::vector<NamedTensor> trained = net.params();
  for (size_t k = 0; k < trained.size(); ++k) trained[k].value = params[k].detach().cpu();
  absl::StatusOr<torch::jit::Module> out =
      MakeClassifierModule(net, trained, /*requires_grad=*/false);
  if (!out.ok()) return out.status();
  const fs::path path = fs::path(o.out_dir) / "classifier.pt";
  try {
    out->save(path.string() + ".tmp");
    fs::rename(path.string() + ".tmp", path);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("saving ", path.string(), ": ", e.what()));
  }

  ClassifierTrainResult r;
  r.test_accuracy = accuracy;
  r.train_seconds = seconds;
  r.parameters = net.parameter_count();
  r.feature_dim = kFeatures;
  {
    const fs::path json = fs::path(o.out_dir) / "classifier.json";
    std::ofstream f(json, std::ios::trunc);
    f << absl::StrFormat(
        "{\n  \"file\": \"classifier.pt\",\n  \"test_accuracy\": %.4f,\n  \"test_images\": %d,\n"
        "  \"feature_dim\": %d,\n  \"parameters\": %d,\n  \"epochs\": %.2f,\n"
        "  \"train_seconds\": %.0f,\n  \"command\": \"%s\"\n}\n",
        r.test_accuracy, test->size(), kFeatures, r.parameters,
        static_cast<double>(total) / steps_per_epoch, seconds,
        absl::CEscape(o.command));
    if (!f.flush()) return absl::UnavailableError(absl::StrCat("cannot write ", json.string()));
  }
  const fs::path manifest = fs::path(o.out_dir) / "manifest.json";
  if (fs::exists(manifest)) {
    if (absl::Status s = SetManifestClassifier(manifest.string(), "classifier.pt"); !s.ok()) {
      return s;
    }
  }
  return r;
}

}  // namespace dgrid::training
