#include "trainer.h"

#include <ATen/Parallel.h>
#include <torch/optim/adamw.h>
#include <torch/serialize.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "bundle_writer.h"
#include "dataset.h"
#include "device.h"
#include "loss_plot.h"
#include "progress.h"
#include "unet.h"

namespace dgrid::training {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr int64_t kTrainTimesteps = 1000;
constexpr double kBetaStart = 1e-4;
constexpr double kBetaEnd = 0.02;
constexpr int64_t kCheckpointFormat = 1;
// Steps over which final_loss is averaged: one interval's loss is noisy
// because each batch draws its own timesteps. Short runs use their last fifth.
int64_t FinalLossWindow(int64_t total_steps) {
  return std::clamp<int64_t>(total_steps / 5, 1, 200);
}

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Linear warmup, then cosine decay to a tenth of the peak: the late, small
// steps are where the EMA weights settle.
double LearningRate(double peak, int64_t step, int64_t total) {
  const int64_t warmup = std::max<int64_t>(1, std::min<int64_t>(250, total / 10));
  if (step < warmup) return peak * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const double progress =
      static_cast<double>(step - warmup) / static_cast<double>(std::max<int64_t>(1, total - warmup));
  return peak * (0.1 + 0.9 * 0.5 * (1.0 + std::cos(M_PI * std::min(1.0, progress))));
}

// Scales all gradients together so that their global norm is at most
// max_norm: rare large batches (many small t) then cannot throw the weights.
void ClipGradNorm(const std::vector<torch::Tensor>& params, double max_norm) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> sq;
  for (const torch::Tensor& p : params) {
    if (p.grad().defined()) sq.push_back(p.grad().pow(2).sum());
  }
  if (sq.empty()) return;
  const double norm = torch::stack(sq).sum().sqrt().item<double>();
  if (norm > max_norm) {
    for (const torch::Tensor& p : params) {
      if (p.grad().defined()) p.grad().mul_(max_norm / (norm + 1e-6));
    }
  }
}

// Everything a resumed run needs, besides the optimizer's moments.
struct TrainState {
  int64_t step = 0;
  double train_seconds = 0;
  std::string hardware;  // where the steps so far ran; empty before the first
};

torch::Tensor StringTensor(const std::string& s) {
  return torch::tensor(std::vector<int64_t>(s.begin(), s.end()), torch::kLong);
}

std::string TensorString(const torch::Tensor& t) {
  torch::Tensor c = t.to(torch::kLong).contiguous();
  return std::string(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

absl::Status SaveCheckpoint(const std::string& path, const std::vector<NamedTensor>& spec,
                            const std::vector<torch::Tensor>& params,
                            const std::vector<torch::Tensor>& ema, torch::optim::AdamW& optimizer,
                            const std::vector<int64_t>& channels, const TrainState& state) {
  try {
    torch::serialize::OutputArchive archive;
    archive.write("format", torch::tensor(kCheckpointFormat));
    archive.write("channels", torch::tensor(channels));
    archive.write("step", torch::tensor(state.step));
    archive.write("train_seconds", torch::tensor(state.train_seconds, torch::kFloat64));
    archive.write("hardware", StringTensor(state.hardware));
    for (size_t i = 0; i < spec.size(); ++i) {
      archive.write("param/" + spec[i].name, params[i].detach().cpu());
      archive.write("ema/" + spec[i].name, ema[i].cpu());
    }
    torch::serialize::OutputArchive opt_archive;
    optimizer.save(opt_archive);
    archive.write("optimizer", opt_archive);
    const std::string tmp = path + ".tmp";
    archive.save_to(tmp);
    fs::rename(tmp, path);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("writing checkpoint ", path, ": ", e.what()));
  }
  return absl::OkStatus();
}

absl::Status LoadCheckpoint(const std::string& path, const std::vector<NamedTensor>& spec,
                            std::vector<torch::Tensor>& params, std::vector<torch::Tensor>& ema,
                            torch::optim::AdamW& optimizer, const std::vector<int64_t>& channels,
                            const torch::Device& device, TrainState& state) {
  try {
    torch::serialize::InputArchive archive;
    // Tensors land on this run's device, so a run checkpointed on CUDA
    // resumes (or re-exports) on a CPU-only build and the other way round.
    archive.load_from(path, device);
    // read() into a defined tensor resizes it in place, which fails for
    // tensors that came from the archive: read each key into a fresh one.
    auto read = [&archive](const std::string& key) {
      torch::Tensor t;
      archive.read(key, t);
      return t;
    };
    const int64_t format = read("format").item<int64_t>();
    if (format != kCheckpointFormat) {
      return absl::FailedPreconditionError(absl::StrCat(
          path, ": checkpoint format ", format, ", expected ", kCheckpointFormat));
    }
    torch::Tensor c = read("channels").contiguous();
    std::vector<int64_t> saved(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
    if (saved != channels) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, ": checkpoint has channels ", absl::StrJoin(saved, ","),
                       " but this run asks for ", absl::StrJoin(channels, ",")));
    }
    state.step = read("step").item<int64_t>();
    state.train_seconds = read("train_seconds").item<double>();
    // Checkpoints written before the hardware was recorded lack the key.
    if (torch::Tensor hw; archive.try_read("hardware", hw)) state.hardware = TensorString(hw);
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < spec.size(); ++i) {
      params[i].copy_(read("param/" + spec[i].name));
      ema[i].copy_(read("ema/" + spec[i].name));
    }
    torch::serialize::InputArchive opt_archive;
    archive.read("optimizer", opt_archive);
    optimizer.load(opt_archive);
  } catch (const std::exception& e) {
    return absl::DataLossError(absl::StrCat("reading checkpoint ", path, ": ", e.what()));
  }
  return absl::OkStatus();
}

double MeanLossSince(const std::vector<LossPoint>& curve, int64_t from_step) {
  double sum = 0;
  int n = 0;
  for (const LossPoint& p : curve) {
    if (p.step > from_step) {
      sum += p.loss;
      ++n;
    }
  }
  return n > 0 ? sum / n : (curve.empty() ? 0 : curve.back().loss);
}

struct ExportInputs {
  const DiffusionTrainOptions* options;
  const ScriptNetBuilder* export_net;  // fp32 graph
  std::vector<int64_t> image_hw;
  int epochs_done;
  uint64_t seed;
  double final_loss;
  std::string hardware;
  double train_seconds;
  int64_t parameters;
};

// Writes model.pt (EMA weights, fp32 graph, CPU tensors) and manifest.json.
absl::StatusOr<double> ExportBundle(const ExportInputs& in, const std::vector<torch::Tensor>& ema) {
  const DiffusionTrainOptions& o = *in.options;
  std::vector<NamedTensor> params = in.export_net->params();
  for (size_t i = 0; i < params.size(); ++i) params[i].value = ema[i].detach().cpu();
  absl::StatusOr<torch::jit::Module> module =
      MakeUNetModule(*in.export_net, params, /*requires_grad=*/false);
  if (!module.ok()) return module.status();
  const std::string model_path = (fs::path(o.out_dir) / "model.pt").string();
  try {
    module->save(model_path + ".tmp");
    fs::rename(model_path + ".tmp", model_path);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("saving ", model_path, ": ", e.what()));
  }
  absl::StatusOr<double> ms = MeasureMsPerImage(model_path, in.image_hw[0], in.image_hw[1], 32,
                                                o.measure_iters, o.threads);
  if (!ms.ok()) return ms.status();

  BundleManifest m = FashionMnistManifest();
  m.latent_shape = {1, in.image_hw[0], in.image_hw[1]};
  m.image_shape = {in.image_hw[0], in.image_hw[1], 1};
  m.schedule.beta_start = kBetaStart;
  m.schedule.beta_end = kBetaEnd;
  m.schedule.train_timesteps = kTrainTimesteps;
  m.defaults.guidance = o.guidance;
  m.training.command = o.command;
  m.training.epochs = in.epochs_done;
  m.training.seed = in.seed;
  // Rounded: the manifest is read by people too.
  auto round_to = [](double v, double per_unit) { return std::round(v * per_unit) / per_unit; };
  m.training.final_loss = round_to(in.final_loss, 1e5);
  m.training.hardware = in.hardware;
  m.training.train_seconds = round_to(in.train_seconds, 1);
  m.training.parameters = in.parameters;
  m.training.ms_per_image_forward_b32 = round_to(*ms, 1e3);
  if (fs::exists(fs::path(o.out_dir) / "classifier.pt")) m.classifier = "classifier.pt";
  absl::Status s = WriteManifest(m, (fs::path(o.out_dir) / "manifest.json").string());
  if (!s.ok()) return s;
  return *ms;
}

}  // namespace

absl::StatusOr<double> MeasureMsPerImage(const std::string& model_path, int64_t height,
                                         int64_t width, int batch, int iters, int threads) {
  try {
    at::set_num_threads(threads);
    torch::jit::Module m = torch::jit::load(model_path, torch::kCPU);
    m.eval();
    torch::NoGradGuard no_grad;
    torch::Tensor x = torch::randn({batch, 1, height, width});
    torch::Tensor t = torch::randint(0, kTrainTimesteps, {batch}, torch::kLong);
    torch::Tensor c = torch::randint(0, kNumClasses + 1, {batch}, torch::kLong);
    // The profiling executor specialises the graph over the first runs.
    for (int i = 0; i < 3; ++i) m.forward({x, t, c});
    std::vector<double> ms;
    for (int i = 0; i < std::max(1, iters); ++i) {
      auto a = Clock::now();
      m.forward({x, t, c});
      ms.push_back(Seconds(a, Clock::now()) * 1000.0 / batch);
    }
    std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
    return ms[ms.size() / 2];
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("timing ", model_path, ": ", e.what()));
  }
}

absl::StatusOr<std::pair<int64_t, double>> MeasureArchitecture(
    const std::vector<int64_t>& channels, const std::string& scratch_path, int iters, int threads) {
  UNetConfig config;
  config.channels = channels;
  const ScriptNetBuilder net = BuildUNet(config, /*seed=*/1, ComputeType::kFloat32);
  absl::StatusOr<torch::jit::Module> module = MakeUNetModule(net, net.params(), false);
  if (!module.ok()) return module.status();
  try {
    module->save(scratch_path);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("saving ", scratch_path, ": ", e.what()));
  }
  absl::StatusOr<double> ms = MeasureMsPerImage(scratch_path, 28, 28, 32, iters, threads);
  if (!ms.ok()) return ms.status();
  return std::make_pair(net.parameter_count(), *ms);
}

absl::StatusOr<DiffusionTrainResult> TrainDiffusion(const DiffusionTrainOptions& o) {
  if (o.out_dir.empty()) return absl::InvalidArgumentError("--out_dir is required");
  if (o.batch < 1 || o.epochs < 1) {
    return absl::InvalidArgumentError("--batch and --epochs must be positive");
  }
  std::error_code ec;
  fs::create_directories(o.out_dir, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot create ", o.out_dir, ": ", ec.message()));
  const std::string checkpoint =
      o.checkpoint.empty() ? (fs::path(o.out_dir) / "checkpoint.pt").string() : o.checkpoint;
  const std::string csv_path = (fs::path(o.out_dir) / "loss.csv").string();
  const std::string png_path = (fs::path(o.out_dir) / "loss.png").string();

  // Callers may hold a NoGradGuard (inference code nearby); training needs grad.
  torch::AutoGradMode enable_grad(true);
  const torch::Device device = ChooseDevice(o.threads);
  absl::StatusOr<ComputeType> compute = ParsePrecision(o.precision, device);
  if (!compute.ok()) return compute.status();
  const std::string hardware = HardwareDescription(device, o.threads, *compute);

  absl::StatusOr<ImageDataset> data = LoadImageDataset(
      o.data_dir.empty() ? kDefaultDataDir : o.data_dir, "train", o.limit_images, device);
  if (!data.ok()) return data.status();
  const int64_t n = data->size();
  const int64_t steps_per_epoch = n / o.batch;
  if (steps_per_epoch < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--batch ", o.batch, " exceeds the ", n, " training images"));
  }
  const int64_t planned = steps_per_epoch * o.epochs;
  const int64_t total_steps = o.max_steps > 0 ? std::min(o.max_steps, planned) : planned;

  UNetConfig config;
  config.channels = o.channels;
  const ScriptNetBuilder train_net = BuildUNet(config, o.seed, *compute);
  const ScriptNetBuilder export_net = BuildUNet(config, o.seed, ComputeType::kFloat32);
  absl::StatusOr<torch::jit::Module> module =
      MakeUNetModule(train_net, train_net.params(), /*requires_grad=*/true);
  if (!module.ok()) return module.status();
  module->to(device);
  module->train();
  std::vector<torch::Tensor> params = ModuleParameters(*module, train_net.params());
  std::vector<torch::Tensor> ema;
  for (const torch::Tensor& p : params) ema.push_back(p.detach().clone());
  const int64_t parameter_count = train_net.parameter_count();

  torch::optim::AdamW optimizer(params, torch::optim::AdamWOptions(o.lr).weight_decay(0.01));
  TrainState state;
  std::vector<LossPoint> curve;
  if (o.resume) {
    if (!fs::exists(checkpoint)) {
      return absl::NotFoundError(absl::StrCat("--resume: no checkpoint at ", checkpoint));
    }
    absl::Status s = LoadCheckpoint(checkpoint, train_net.params(), params, ema, optimizer,
                                    o.channels, device, state);
    if (!s.ok()) return s;
    if (absl::StatusOr<std::vector<LossPoint>> old = ReadLossCsv(csv_path); old.ok()) {
      for (const LossPoint& p : *old) {
        if (p.step <= state.step) curve.push_back(p);
      }
    }
    std::fprintf(stderr, "resumed from %s at step %ld (%.0f s trained)\n", checkpoint.c_str(),
                 state.step, state.train_seconds);
  }

  // DDPM forward process q(x_t | x_0), computed in double then stored fp32.
  torch::Tensor betas = torch::linspace(kBetaStart, kBetaEnd, kTrainTimesteps, torch::kFloat64);
  torch::Tensor alpha_bar = torch::cumprod(1.0 - betas, 0);
  torch::Tensor sqrt_ab = alpha_bar.sqrt().to(torch::kFloat32).to(device);
  torch::Tensor sqrt_1mab = (1.0 - alpha_bar).sqrt().to(torch::kFloat32).to(device);

  std::fprintf(stderr,
               "dgrid-train diffusion: %ld images, %ld steps/epoch, %ld steps, batch %d, "
               "%ld parameters, channels %s, %s\n",
               n, steps_per_epoch, total_steps, o.batch, parameter_count,
               absl::StrJoin(o.channels, "/").c_str(), hardware.c_str());

  ProgressBar bar("diffusion", total_steps);
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  torch::Tensor perm;
  int64_t perm_epoch = -1;
  double interval_loss = 0;
  int64_t interval_steps = 0;
  double first_loss = -1;
  double last_rate = 0;
  double last_ms = 0;
  auto interval_start = Clock::now();
  auto segment_start = Clock::now();
  const double seconds_before = state.train_seconds;
  auto trained_seconds = [&] { return seconds_before + Seconds(segment_start, Clock::now()); };

  auto export_bundle = [&](int epochs_done) -> absl::Status {
    if (absl::Status s = WriteLossCsv(curve, csv_path); !s.ok()) return s;
    if (!curve.empty()) {
      if (absl::Status s = WriteLossPlot(curve, "dgrid-train diffusion", png_path); !s.ok()) {
        return s;
      }
    }
    ExportInputs in{&o,       &export_net, {data->images.size(2), data->images.size(3)},
                    epochs_done, o.seed,   MeanLossSince(curve, state.step - FinalLossWindow(total_steps)),
                    state.hardware.empty() ? hardware : state.hardware, trained_seconds(),
                    parameter_count};
    absl::StatusOr<double> ms = ExportBundle(in, ema);
    if (!ms.ok()) return ms.status();
    last_ms = *ms;
    std::fprintf(stderr, "\nexported %s (epoch %d, %.3f ms/image at batch 32)\n",
                 o.out_dir.c_str(), epochs_done, *ms);
    return absl::OkStatus();
  };

  // The manifest names every machine that took steps of this run.
  if (state.step < total_steps && !absl::StrContains(state.hardware, hardware)) {
    state.hardware = state.hardware.empty() ? hardware : absl::StrCat(state.hardware, "; then ", hardware);
  }
  bool exported = false;
  try {
    while (state.step < total_steps) {
      const int64_t epoch = state.step / steps_per_epoch;
      if (epoch != perm_epoch) {
        torch::Generator epoch_gen =
            at::make_generator<at::CPUGeneratorImpl>(MixSeed(o.seed, 1000000 + epoch));
        perm = torch::randperm(n, epoch_gen, torch::kLong).to(device);
        perm_epoch = epoch;
        bar.set_label(absl::StrCat("epoch ", epoch + 1, "/", o.epochs));
      }
      const int64_t i = state.step % steps_per_epoch;
      torch::Tensor idx = perm.slice(0, i * o.batch, (i + 1) * o.batch);

      // Timesteps, noise and dropped labels come from a generator keyed by
      // the step, so a resumed run continues exactly where it stopped.
      gen.set_current_seed(MixSeed(o.seed, static_cast<uint64_t>(state.step)));
      torch::Tensor t = torch::randint(0, kTrainTimesteps, {o.batch}, gen, torch::kLong);
      torch::Tensor noise = torch::randn({o.batch, 1, data->images.size(2), data->images.size(3)},
                                         gen, torch::kFloat32);
      torch::Tensor drop = torch::rand({o.batch}, gen) < o.cond_dropout;
      t = t.to(device);
      noise = noise.to(device);
      drop = drop.to(device);

      torch::Tensor x0 = ToUnitRange(data->images.index_select(0, idx));
      torch::Tensor cond =
          torch::where(drop, torch::full({o.batch}, kNumClasses, torch::TensorOptions().dtype(torch::kLong).device(device)),
                       data->labels.index_select(0, idx));
      torch::Tensor xt = sqrt_ab.index_select(0, t).view({-1, 1, 1, 1}) * x0 +
                         sqrt_1mab.index_select(0, t).view({-1, 1, 1, 1}) * noise;

      for (auto& group : optimizer.param_groups()) {
        static_cast<torch::optim::AdamWOptions&>(group.options())
            .lr(LearningRate(o.lr, state.step, total_steps));
      }
      optimizer.zero_grad();
      torch::Tensor eps = module->forward({xt, t, cond}).toTensor();
      torch::Tensor loss = torch::mse_loss(eps, noise);
      loss.backward();
      ClipGradNorm(params, 1.0);
      optimizer.step();
      ++state.step;
      {
        // EMA with the usual warm-up, so early exports are not dominated by
        // the random initialisation.
        torch::NoGradGuard no_grad;
        const double d = std::min(o.ema_decay, (1.0 + state.step) / (10.0 + state.step));
        for (size_t k = 0; k < params.size(); ++k) ema[k].mul_(d).add_(params[k].detach(), 1 - d);
      }

      const double loss_value = loss.item<double>();
      if (!std::isfinite(loss_value)) {
        return absl::InternalError(absl::StrCat("loss is ", loss_value, " at step ", state.step,
                                                "; lower --lr or resume from the checkpoint"));
      }
      interval_loss += loss_value;
      ++interval_steps;
      if (state.step % o.log_every == 0 || state.step == total_steps) {
        const auto now = Clock::now();
        last_rate = static_cast<double>(interval_steps * o.batch) / Seconds(interval_start, now);
        LossPoint p;
        p.step = state.step;
        p.epoch = static_cast<double>(state.step) / steps_per_epoch;
        p.loss = interval_loss / interval_steps;
        p.images_per_s = last_rate;
        p.lr = LearningRate(o.lr, state.step - 1, total_steps);
        curve.push_back(p);
        if (first_loss < 0) first_loss = p.loss;
        bar.Update(state.step, p.loss, last_rate);
        interval_loss = 0;
        interval_steps = 0;
        interval_start = now;
      }
      if (state.step % o.checkpoint_every == 0 || state.step == total_steps) {
        state.train_seconds = trained_seconds();
        absl::Status s = SaveCheckpoint(checkpoint, train_net.params(), params, ema, optimizer,
                                        o.channels, state);
        if (!s.ok()) return s;
        if (absl::Status w = WriteLossCsv(curve, csv_path); !w.ok()) return w;
      }
      if (state.step % steps_per_epoch == 0 || state.step == total_steps) {
        const int epochs_done = static_cast<int>((state.step + steps_per_epoch - 1) / steps_per_epoch);
        const auto export_start = Clock::now();
        if (absl::Status s = export_bundle(epochs_done); !s.ok()) return s;
        exported = true;
        // Exports are not training time for the images/s figure.
        interval_start += Clock::now() - export_start;
      }
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("training step ", state.step, ": ", e.what()));
  }
  bar.Finish();
  if (!exported) {
    // Resuming a finished run re-exports its bundle: this is how weights
    // trained elsewhere (a CUDA machine) get their archive written, and their
    // speed measured, by this machine's LibTorch.
    std::fprintf(stderr, "run already finished at step %ld: re-exporting\n", state.step);
    const int epochs_done = static_cast<int>((state.step + steps_per_epoch - 1) / steps_per_epoch);
    if (absl::Status s = export_bundle(epochs_done); !s.ok()) return s;
  }

  DiffusionTrainResult r;
  r.steps = state.step;
  r.first_loss = first_loss;
  r.final_loss = MeanLossSince(curve, state.step - FinalLossWindow(total_steps));
  r.images_per_s = last_rate;
  r.train_seconds = trained_seconds();
  r.parameters = parameter_count;
  r.ms_per_image_b32 = last_ms;
  return r;
}

}  // namespace dgrid::training
