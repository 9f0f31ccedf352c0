// Domain types <-> their protobuf messages, in one place for every service
// and client: paths, spacing, and a bundle's description as ModelInfo. Conversions that can fail name the request
// field they read.
//
//   PathToProto(plan.trunk, request.add_trajectories()->mutable_path());
//   ASSIGN_OR_RETURN(Spacing spacing,
//                    SpacingFromProto(config.spacing(), model_default, "sampler.spacing"));
#ifndef DGRID_COMMON_WIRE_H_
#define DGRID_COMMON_WIRE_H_

#include <string>

#include "absl/status/statusor.h"
#include "common/bundle_manifest.h"
#include "common/path.h"
#include "dgrid/v1/denoiser.pb.h"

namespace dgrid {

void PathToProto(const Path& path, v1::Path* out);
Path PathFromProto(const v1::Path& path);

v1::Spacing SpacingToProto(Spacing spacing);
// SPACING_UNSPECIFIED gives `unspecified`; an unknown enum value is an
// INVALID_ARGUMENT naming `field`.
absl::StatusOr<Spacing> SpacingFromProto(v1::Spacing spacing, Spacing unspecified,
                                         const std::string& field);

// What GetModelInfo says of a bundle.
v1::ModelInfo ModelInfoFromManifest(const BundleManifest& manifest);

}  // namespace dgrid

#endif  // DGRID_COMMON_WIRE_H_
