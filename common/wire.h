// Domain types <-> their protobuf messages, in one place for every service
// and client: paths, spacing, a bundle's description as ModelInfo, images and
// a run's events. Conversions that can fail name the request
// field they read.
//
//   PathToProto(plan.trunk, request.add_trajectories()->mutable_path());
//   ASSIGN_OR_RETURN(Spacing spacing,
//                    SpacingFromProto(config.spacing(), model_default, "sampler.spacing"));
#ifndef DGRID_COMMON_WIRE_H_
#define DGRID_COMMON_WIRE_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/bundle_manifest.h"
#include "common/path.h"
#include "common/run_event.h"
#include "dgrid/v1/denoiser.pb.h"

namespace dgrid {

void PathToProto(const Path& path, v1::Path* out);
Path PathFromProto(const v1::Path& path);

v1::Sampler SamplerToProto(Sampler sampler);
// UNSPECIFIED is DDIM; an unknown value is INVALID_ARGUMENT naming `field`.
absl::StatusOr<Sampler> SamplerFromProto(v1::Sampler sampler, const std::string& field);

v1::Spacing SpacingToProto(Spacing spacing);
// SPACING_UNSPECIFIED gives `unspecified`; an unknown enum value is an
// INVALID_ARGUMENT naming `field`.
absl::StatusOr<Spacing> SpacingFromProto(v1::Spacing spacing, Spacing unspecified,
                                         const std::string& field);

void SizeToProto(const SizeConditioning& size, v1::SizeConditioning* out);
SizeConditioning SizeFromProto(const v1::SizeConditioning& size);

// What GetModelInfo says of a bundle.
v1::ModelInfo ModelInfoFromManifest(const BundleManifest& manifest);

// Decoded pixels (8-bit [H, W, C] of the manifest's image shape) as an Image:
// the tensor and its PNG.
absl::Status ImageToProto(absl::Span<const uint8_t> pixels, const BundleManifest& manifest,
                          v1::Image* image);

// A run's event as Branch streams it: the latent, the x0 preview when
// `previews` (and the event has one), and their images when `decode`.
absl::Status RunEventToProto(const RunEvent& event, const BundleManifest& manifest,
                             bool previews, bool decode, v1::BranchEvent* out);

}  // namespace dgrid

#endif  // DGRID_COMMON_WIRE_H_
