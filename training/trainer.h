// Trains the bundle's denoiser: a class-conditional epsilon-prediction DDPM
// UNet (unet.h) on Fashion-MNIST, with condition dropout (so the same weights
// give unconditional predictions and classifier-free guidance), AdamW with
// warmup and cosine decay, and EMA weights. It checkpoints every few hundred
// steps and resumes from the checkpoint; at each epoch's end it exports the
// bundle (EMA weights as TorchScript model.pt, manifest.json, loss.csv and
// loss.png) into `out_dir`, so a partial run already leaves a usable model.
//
// Torch-free header: main.cc and tests call it without torch's compile cost.
//
//   DiffusionTrainOptions o;
//   o.out_dir = "models/fashion-mnist";
//   absl::StatusOr<DiffusionTrainResult> r = TrainDiffusion(o);
#ifndef DGRID_TRAINING_TRAINER_H_
#define DGRID_TRAINING_TRAINER_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace dgrid::training {

struct DiffusionTrainOptions {
  std::string data_dir;        // empty: Debian's /usr/share/datasets/fashion-mnist
  std::string out_dir;         // the bundle folder
  std::string checkpoint;      // empty: <out_dir>/checkpoint.pt
  int epochs = 8;
  int batch = 128;
  double lr = 2e-3;
  uint64_t seed = 1;
  int threads = 2;
  bool resume = false;
  int64_t limit_images = 0;    // > 0: train on the first N images only
  int64_t max_steps = 0;       // > 0: stop after N optimizer steps
  int checkpoint_every = 250;  // steps
  int log_every = 20;          // steps per loss-curve point
  std::string precision = "auto";  // fp32, bf16 or auto (see device.h)
  std::vector<int64_t> channels = {32, 64, 64};
  double cond_dropout = 0.1;   // fraction of labels replaced by the null label
  double ema_decay = 0.999;
  double guidance = 2.0;       // the sampler default written to the manifest
  int measure_iters = 20;      // batches timed for ms_per_image_forward_b32
  std::string command;         // recorded in the manifest
};

struct DiffusionTrainResult {
  int64_t steps = 0;
  double first_loss = 0;  // mean over the first logged interval of this run
  double final_loss = 0;  // mean over the last ~200 steps
  double images_per_s = 0;
  double train_seconds = 0;  // all runs together, when resumed
  int64_t parameters = 0;
  double ms_per_image_b32 = 0;
};

absl::StatusOr<DiffusionTrainResult> TrainDiffusion(const DiffusionTrainOptions& options);

// Loads a TorchScript denoiser and times forward passes of `batch` images of
// 1 x height x width (median of `iters` batches, after warm-up) on the CPU
// with `threads` threads. Returns milliseconds per image.
absl::StatusOr<double> MeasureMsPerImage(const std::string& model_path, int64_t height,
                                         int64_t width, int batch, int iters, int threads);

// Sizing before training: builds an untrained UNet with these channels,
// saves it to `scratch_path` and times it as above. Returns
// {parameters, ms per image}.
absl::StatusOr<std::pair<int64_t, double>> MeasureArchitecture(
    const std::vector<int64_t>& channels, const std::string& scratch_path, int iters, int threads);

}  // namespace dgrid::training

#endif  // DGRID_TRAINING_TRAINER_H_
