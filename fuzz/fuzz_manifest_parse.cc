// Fuzzes model-manifest parsing (JSON through protobuf's mapping, then
// validation): refuse or accept, never crash; accepted shapes are sane.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "common/manifest_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto manifest = dgrid::ParseManifestJson(
      absl::string_view(reinterpret_cast<const char*>(data), size));
  if (manifest.ok() && (manifest->LatentNumel() <= 0 || manifest->latent_shape.size() != 3)) {
    std::abort();
  }
  return 0;
}
