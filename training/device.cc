#include "device.h"

#include <ATen/Parallel.h>
#include <torch/cuda.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace dgrid::training {
namespace {

// The first line of /proc/cpuinfo that starts with `key`, value part.
std::string CpuInfo(const std::string& key) {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, key)) {
      size_t colon = line.find(':');
      if (colon != std::string::npos) {
        return std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
      }
    }
  }
  return "";
}

bool CpuHasNativeBf16() {
  const std::string flags = CpuInfo("flags");
  return absl::StrContains(flags, " amx_bf16") || absl::StrContains(flags, " avx512_bf16");
}

// The NVIDIA driver's name for the first GPU ("NVIDIA H100 80GB HBM3"), or
// "CUDA GPU" where /proc/driver/nvidia is not visible.
std::string CudaGpuName() {
  std::error_code ec;
  for (const auto& gpu : std::filesystem::directory_iterator("/proc/driver/nvidia/gpus", ec)) {
    std::ifstream in(gpu.path() / "information");
    std::string line;
    while (std::getline(in, line)) {
      if (absl::StartsWith(line, "Model:")) {
        return std::string(absl::StripAsciiWhitespace(line.substr(6)));
      }
    }
  }
  return "CUDA GPU";
}

}  // namespace

torch::Device ChooseDevice(int threads) {
  at::set_num_threads(threads);
  try {
    at::set_num_interop_threads(1);
  } catch (const std::exception&) {
    // Already set in this process; harmless.
  }
  if (torch::cuda::is_available()) return torch::Device(torch::kCUDA, 0);
  return torch::Device(torch::kCPU);
}

absl::StatusOr<ComputeType> ParsePrecision(const std::string& precision,
                                           const torch::Device& device) {
  if (precision == "fp32") return ComputeType::kFloat32;
  if (precision == "bf16") return ComputeType::kBFloat16;
  if (precision == "auto") {
    return device.is_cpu() && CpuHasNativeBf16() ? ComputeType::kBFloat16 : ComputeType::kFloat32;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--precision must be fp32, bf16 or auto, not '", precision, "'"));
}

std::string HardwareDescription(const torch::Device& device, int threads, ComputeType compute) {
  const char* mode = compute == ComputeType::kBFloat16 ? "bf16 mixed precision" : "fp32";
  if (device.is_cuda()) return absl::StrCat(CudaGpuName(), ", ", mode);
  std::string cpu = CpuInfo("model name");
  if (cpu.empty()) cpu = "CPU";
  return absl::StrCat(cpu, ", ", std::thread::hardware_concurrency(), " cores, ", threads,
                      " torch threads, ", mode);
}

uint64_t MixSeed(uint64_t seed, uint64_t counter) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + counter + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace dgrid::training
