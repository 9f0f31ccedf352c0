// dgrid-train: trains the shipped Fashion-MNIST bundle.
//
//   dgrid-train diffusion  --out_dir models/fashion-mnist [--epochs 8] [--resume] ...
//   dgrid-train classifier --out_dir models/fashion-mnist [--epochs 8] ...
//   dgrid-train measure    --model models/fashion-mnist/model.pt | --channels 32,64,64
//
// Wiring only: flags in, options structs out, the work is in trainer.cc and
// classifier.cc.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "classifier.h"
#include "trainer.h"

ABSL_FLAG(std::string, out_dir, "", "bundle folder to write (models/fashion-mnist)");
ABSL_FLAG(std::string, data_dir, "", "folder of the Fashion-MNIST .gz files (default: Debian's)");
ABSL_FLAG(int, epochs, 0, "passes over the training set (0: 8 for both subcommands)");
ABSL_FLAG(int, batch, 128, "images per optimizer step");
ABSL_FLAG(double, lr, 2e-3, "peak learning rate (AdamW)");
ABSL_FLAG(uint64_t, seed, 1, "seed for initialisation, data order and noise");
ABSL_FLAG(int, threads, 2, "CPU threads for torch");
ABSL_FLAG(bool, resume, false, "continue from --checkpoint");
ABSL_FLAG(int64_t, limit_images, 0, "train on the first N images only (smoke tests)");
ABSL_FLAG(int64_t, max_steps, 0, "stop after N optimizer steps (smoke tests)");
ABSL_FLAG(std::string, checkpoint, "", "checkpoint file (default <out_dir>/checkpoint.pt)");
ABSL_FLAG(int, checkpoint_every, 250, "optimizer steps between checkpoints");
ABSL_FLAG(std::string, precision, "auto", "fp32, bf16 or auto (bf16 where the CPU has it)");
ABSL_FLAG(std::string, channels, "32,64,64", "UNet channels per resolution level");
ABSL_FLAG(double, cond_dropout, 0.1, "fraction of labels replaced by the null label");
ABSL_FLAG(double, ema_decay, 0.999, "EMA decay of the exported weights");
ABSL_FLAG(double, guidance, 2.0, "classifier-free guidance default written to the manifest");
ABSL_FLAG(std::string, model, "", "measure: TorchScript denoiser to time");

namespace {

// The command as a user would retype it, for the manifest; --resume is left
// out because the result is the same as an unbroken run's.
std::string RecordedCommand(int argc, char** argv) {
  std::vector<std::string> parts = {"dgrid-train"};
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--resume" || arg == "--resume=true") continue;
    parts.push_back(arg);
  }
  return absl::StrJoin(parts, " ");
}

absl::StatusOr<std::vector<int64_t>> ParseChannels(const std::string& text) {
  std::vector<int64_t> out;
  for (absl::string_view c : absl::StrSplit(text, ',')) {
    int64_t v = 0;
    // GroupNorm uses 8 groups.
    if (!absl::SimpleAtoi(c, &v) || v <= 0 || v % 8 != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--channels wants positive multiples of 8, got '", text, "'"));
    }
    out.push_back(v);
  }
  return out;
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "dgrid-train: %s\n", s.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "dgrid-train diffusion|classifier|measure --out_dir DIR [flags]\n"
      "Trains the Fashion-MNIST denoiser bundle or its evaluation classifier.");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() != 2) {
    std::fprintf(stderr, "usage: %s\n", std::string(absl::ProgramUsageMessage()).c_str());
    return 2;
  }
  const std::string command = args[1];
  const int epochs = absl::GetFlag(FLAGS_epochs) > 0 ? absl::GetFlag(FLAGS_epochs) : 8;

  if (command == "diffusion") {
    dgrid::training::DiffusionTrainOptions o;
    o.data_dir = absl::GetFlag(FLAGS_data_dir);
    o.out_dir = absl::GetFlag(FLAGS_out_dir);
    o.checkpoint = absl::GetFlag(FLAGS_checkpoint);
    o.epochs = epochs;
    o.batch = absl::GetFlag(FLAGS_batch);
    o.lr = absl::GetFlag(FLAGS_lr);
    o.seed = absl::GetFlag(FLAGS_seed);
    o.threads = absl::GetFlag(FLAGS_threads);
    o.resume = absl::GetFlag(FLAGS_resume);
    o.limit_images = absl::GetFlag(FLAGS_limit_images);
    o.max_steps = absl::GetFlag(FLAGS_max_steps);
    o.checkpoint_every = absl::GetFlag(FLAGS_checkpoint_every);
    o.precision = absl::GetFlag(FLAGS_precision);
    o.cond_dropout = absl::GetFlag(FLAGS_cond_dropout);
    o.ema_decay = absl::GetFlag(FLAGS_ema_decay);
    o.guidance = absl::GetFlag(FLAGS_guidance);
    o.command = RecordedCommand(argc, argv);
    absl::StatusOr<std::vector<int64_t>> channels = ParseChannels(absl::GetFlag(FLAGS_channels));
    if (!channels.ok()) return Fail(channels.status());
    o.channels = *channels;
    absl::StatusOr<dgrid::training::DiffusionTrainResult> r = dgrid::training::TrainDiffusion(o);
    if (!r.ok()) return Fail(r.status());
    std::printf(
        "steps %ld  first_loss %.4f  final_loss %.4f  %.0f img/s  train %.0f s  "
        "parameters %ld  %.3f ms/image (batch 32)\n",
        r->steps, r->first_loss, r->final_loss, r->images_per_s, r->train_seconds, r->parameters,
        r->ms_per_image_b32);
    return 0;
  }
  if (command == "classifier") {
    dgrid::training::ClassifierTrainOptions o;
    o.data_dir = absl::GetFlag(FLAGS_data_dir);
    o.out_dir = absl::GetFlag(FLAGS_out_dir);
    o.epochs = epochs;
    o.batch = absl::GetFlag(FLAGS_batch);
    o.lr = absl::GetFlag(FLAGS_lr);
    o.seed = absl::GetFlag(FLAGS_seed);
    o.threads = absl::GetFlag(FLAGS_threads);
    o.limit_images = absl::GetFlag(FLAGS_limit_images);
    o.max_steps = absl::GetFlag(FLAGS_max_steps);
    o.command = RecordedCommand(argc, argv);
    absl::StatusOr<dgrid::training::ClassifierTrainResult> r = dgrid::training::TrainClassifier(o);
    if (!r.ok()) return Fail(r.status());
    std::printf("test_accuracy %.4f  parameters %ld  features %ld  train %.0f s\n",
                r->test_accuracy, r->parameters, r->feature_dim, r->train_seconds);
    return 0;
  }
  if (command == "measure") {
    // Times the given model, or an untrained UNet of --channels (for sizing).
    const int threads = absl::GetFlag(FLAGS_threads);
    std::string model = absl::GetFlag(FLAGS_model);
    if (model.empty()) {
      absl::StatusOr<std::vector<int64_t>> channels = ParseChannels(absl::GetFlag(FLAGS_channels));
      if (!channels.ok()) return Fail(channels.status());
      absl::StatusOr<std::pair<int64_t, double>> m = dgrid::training::MeasureArchitecture(
          *channels, "/tmp/dgrid-train-measure.pt", 30, threads);
      if (!m.ok()) return Fail(m.status());
      std::printf("channels %s: %ld parameters, %.3f ms/image (batch 32, %d threads)\n",
                  absl::GetFlag(FLAGS_channels).c_str(), m->first, m->second, threads);
      return 0;
    }
    absl::StatusOr<double> ms = dgrid::training::MeasureMsPerImage(model, 28, 28, 32, 30, threads);
    if (!ms.ok()) return Fail(ms.status());
    std::printf("%.3f ms/image (batch 32, %d threads)\n", *ms, threads);
    return 0;
  }
  std::fprintf(stderr, "dgrid-train: unknown subcommand '%s'\n", command.c_str());
  return 2;
}
