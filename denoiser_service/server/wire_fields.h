// The engine's errors name RunRequest's fields (engine/field_error.h); a
// client knows the fields of the request it sent. The adapter owns the wire,
// so this is where one becomes the other: the run's conditioning is one
// message on the wire, a trajectory's latent is its start_latent, and a Step
// call's one step is its `step`.
//
//   auto run = batcher->Start(std::move(run_request));
//   if (!run.ok()) return ToGrpcStatus(ToWireFields(run.status(), DenoiserRpc::kBranch));
#ifndef DGRID_DENOISER_SERVER_WIRE_FIELDS_H_
#define DGRID_DENOISER_SERVER_WIRE_FIELDS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace dgrid {

// The RPCs whose requests become a RunRequest.
enum class DenoiserRpc { kBranch, kStep };

// The name `rpc`'s request gives the RunRequest field `run_field`
// ("class_index" is "conditioning.class_index"); most are the same.
std::string WireFieldName(absl::string_view run_field, DenoiserRpc rpc);

// `engine_error` naming the wire's field where it named RunRequest's; any
// other status unchanged.
absl::Status ToWireFields(const absl::Status& engine_error, DenoiserRpc rpc);

}  // namespace dgrid

#endif  // DGRID_DENOISER_SERVER_WIRE_FIELDS_H_
