// Where and how training runs: CUDA when this LibTorch has it, else the CPU
// with a fixed thread count; bf16 mixed precision where the hardware makes it
// pay; and a one-line description of the hardware for the manifest.
#ifndef DGRID_TRAINING_DEVICE_H_
#define DGRID_TRAINING_DEVICE_H_

#include <torch/script.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "script_net.h"

namespace dgrid::training {

// Sets intra-op threads (and one inter-op thread) and returns CUDA:0 when
// available, the CPU otherwise.
torch::Device ChooseDevice(int threads);

// "fp32", "bf16" or "auto": bf16 on CPUs with native bf16 matrix units (AMX
// or AVX512-BF16), where it trains about 1.5x faster; fp32 elsewhere.
absl::StatusOr<ComputeType> ParsePrecision(const std::string& precision,
                                           const torch::Device& device);

std::string HardwareDescription(const torch::Device& device, int threads, ComputeType compute);

// A 64-bit mix of a seed and a counter (splitmix64), for per-step and
// per-epoch generators that make a resumed run draw what an unbroken one would.
uint64_t MixSeed(uint64_t seed, uint64_t counter);

}  // namespace dgrid::training

#endif  // DGRID_TRAINING_DEVICE_H_
