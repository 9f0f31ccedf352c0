// Loading TorchScript parts of a bundle, shared by the engine's torch
// translation units (DenoiserModel, ImageJudge). It includes torch: only
// engine .cc files may include it, never a header (docs/ARCHITECTURE.md,
// "Layering").
//
//   ASSIGN_OR_RETURN(torch::jit::script::Module m, LoadScript(dir + "/unet.pt", device));
#ifndef DGRID_DENOISER_ENGINE_SCRIPT_LOADING_H_
#define DGRID_DENOISER_ENGINE_SCRIPT_LOADING_H_

#include <torch/script.h>

#include <string>

#include "absl/status/statusor.h"

namespace dgrid {

// The module at `path` (a regular file, checked first: torch would block on a
// FIFO), in eval mode. INVALID_ARGUMENT naming the path when it does not load.
absl::StatusOr<torch::jit::script::Module> LoadScript(const std::string& path,
                                                      torch::Device device);

// The TorchScript interpreter's errors (std::runtime_error, not c10::Error)
// carry the serialized code's traceback first: the last non-empty line,
// which says what failed, and at most 300 bytes of it.
std::string ShortText(const char* what);

// "[2, 10]".
std::string ShapeOf(const torch::Tensor& t);

// OpenMP's thread count is per calling thread: a thread that did not call
// at::set_num_threads would otherwise use one OpenMP thread per core,
// however many replicas share the cores. Call before torch work on a thread.
void InitThreads();

}  // namespace dgrid

#endif  // DGRID_DENOISER_ENGINE_SCRIPT_LOADING_H_
