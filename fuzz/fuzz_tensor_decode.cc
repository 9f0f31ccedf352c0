// Fuzzes tensor decoding: any bytes a client sends as a Tensor must decode
// or fail with a status, never crash or read out of bounds.
#include <cstddef>
#include <cstdint>

#include "common/tensor_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  dgrid::v1::Tensor tensor;
  if (!tensor.ParseFromArray(data, static_cast<int>(size))) return 0;
  // The model's shape, and whatever shape the input claims (capped so that
  // a valid claim cannot ask for gigabytes).
  (void)dgrid::DecodeFloatTensor(tensor, std::vector<int64_t>{1, 28, 28}, "fuzz");
  std::vector<int64_t> claimed(tensor.shape().begin(), tensor.shape().end());
  int64_t numel = 1;
  for (int64_t d : claimed) {
    if (d < 0 || d > 4096) return 0;
    numel *= d;
    if (numel > (1 << 20)) return 0;
  }
  (void)dgrid::DecodeFloatTensor(tensor, claimed, "fuzz");
  return 0;
}
