// Opens the files of a model bundle as if the bundle were hostile. Loading a
// bundle is an operator's act, but a bundle can come from anywhere: loading
// one must not hang (a FIFO), read without bound (a link to /dev/zero), or
// read outside its folder (vocab.txt -> /etc/passwd).
//
//   ASSIGN_OR_RETURN(std::string path,
//                    ResolveBundleFile(dir, "vocab.txt", "conditioning.tokenizer.vocab"));
//   ASSIGN_OR_RETURN(std::string text, ReadRegularFile(path, 64 << 20));
//
// Abseil only: the tokenizers (which must not see protobuf) and the manifest
// reader both use it.
#ifndef DGRID_COMMON_BUNDLE_FILES_H_
#define DGRID_COMMON_BUNDLE_FILES_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dgrid {

// The canonical path of `relative` in `bundle_dir`, once every link is
// followed. NOT_FOUND when it is missing; INVALID_ARGUMENT, naming the
// manifest `field` that named it, when it resolves outside the (canonical)
// folder or is not a regular file.
absl::StatusOr<std::string> ResolveBundleFile(const std::string& bundle_dir,
                                              const std::string& relative,
                                              absl::string_view field);

// OK when `path` is a regular file of at most `max_bytes`; reads nothing.
// For readers that open the file themselves (torch::jit::load).
absl::Status CheckRegularFile(const std::string& path, uint64_t max_bytes);

// The whole of `path`, a regular file of at most `max_bytes`. A FIFO, device
// or folder is refused without blocking, and a larger file without reading
// past the limit.
absl::StatusOr<std::string> ReadRegularFile(const std::string& path, uint64_t max_bytes);

}  // namespace dgrid

#endif  // DGRID_COMMON_BUNDLE_FILES_H_
