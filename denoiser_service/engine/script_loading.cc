#include "denoiser_service/engine/script_loading.h"

#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/bundle_files.h"

namespace dgrid {
namespace {

// SDXL's UNet is 10 GB in fp32; the bound is for a sparse file posing as one.
constexpr uint64_t kMaxScriptBytes = uint64_t{64} << 30;

}  // namespace

std::string ShortText(const char* what) {
  absl::string_view text(what);
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
  const size_t line = text.rfind('\n');
  if (line != absl::string_view::npos) text.remove_prefix(line + 1);
  return std::string(text.substr(0, 300));
}

absl::StatusOr<torch::jit::script::Module> LoadScript(const std::string& path,
                                                      torch::Device device) {
  // The manifest reader checked the bundle's parts; this is the last look
  // before torch reads, which would block on a FIFO and read a device forever.
  if (absl::Status s = CheckRegularFile(path, kMaxScriptBytes); !s.ok()) return s;
  try {
    torch::jit::script::Module m = torch::jit::load(path, device);
    m.eval();
    return m;
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot load TorchScript ", path, ": ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot load TorchScript ", path, ": ", ShortText(e.what())));
  }
}

std::string ShapeOf(const torch::Tensor& t) {
  return absl::StrCat("[", absl::StrJoin(t.sizes().vec(), ", "), "]");
}

void InitThreads() {
  // Torch sets a thread's OpenMP count to the global one (at::set_num_threads)
  // at the thread's first parallel op, once. at::get_num_threads runs that
  // step now, through libtorch's own once-per-thread flag; at::init_num_threads
  // would set the count without setting the flag, and the first parallel op
  // would then undo any per-thread count set after it.
  thread_local const bool omp_threads_set = (at::get_num_threads(), true);
  (void)omp_threads_set;
}

void SetThisThreadTorchThreads(int threads) {
  InitThreads();  // so that torch's first-op setting does not override this one
  omp_set_num_threads(std::max(1, threads));
}

}  // namespace dgrid
