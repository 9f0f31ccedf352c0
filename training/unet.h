// The denoiser: a small class-conditional UNet that predicts the noise
// epsilon, built as a TorchScript module (see script_net.h) with the bundle's
// signature
//   forward(x [B,1,H,W] float, t [B] long|float, cond [B] long) -> eps [B,1,H,W]
// where cond is a class index or `num_classes` (the null label) for
// unconditional prediction.
//
//   UNetConfig config;  // 32/64/64 channels, 28x28 -> 14 -> 7
//   ScriptNetBuilder net = BuildUNet(config, /*seed=*/1, ComputeType::kFloat32);
//   absl::StatusOr<torch::jit::Module> m = MakeUNetModule(net, /*requires_grad=*/false);
#ifndef DGRID_TRAINING_UNET_H_
#define DGRID_TRAINING_UNET_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "script_net.h"

namespace dgrid::training {

struct UNetConfig {
  // Channels per resolution level; each level after the first halves H and W.
  std::vector<int64_t> channels = {32, 64, 64};
  int64_t num_classes = 10;  // the null label is num_classes
  int64_t groups = 8;        // GroupNorm groups
  int64_t time_features = 32;  // sinusoidal timestep features
};

// Declares the parameters (seeded init) and emits the forward source. The
// same seed gives the same initial weights for either compute type.
ScriptNetBuilder BuildUNet(const UNetConfig& config, uint64_t seed, ComputeType compute);

absl::StatusOr<torch::jit::Module> MakeUNetModule(const ScriptNetBuilder& net,
                                                  const std::vector<NamedTensor>& params,
                                                  bool requires_grad);

}  // namespace dgrid::training

#endif  // DGRID_TRAINING_UNET_H_
