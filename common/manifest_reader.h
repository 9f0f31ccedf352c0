// Reads and validates a bundle's manifest.json with protobuf's JSON mapping.
//
//   ASSIGN_OR_RETURN(BundleManifest m, ReadManifest("models/fashion-mnist"));
//
// Protobuf-free header (the implementation uses protobuf): the engine may
// include it.
#ifndef DGRID_COMMON_MANIFEST_READER_H_
#define DGRID_COMMON_MANIFEST_READER_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/bundle_manifest.h"

namespace dgrid {

// `bundle_dir`/manifest.json. Errors name the manifest field at fault.
absl::StatusOr<BundleManifest> ReadManifest(const std::string& bundle_dir);

// The same from JSON text (the fuzz target and tests use it).
absl::StatusOr<BundleManifest> ParseManifestJson(absl::string_view json);

}  // namespace dgrid

#endif  // DGRID_COMMON_MANIFEST_READER_H_
