#include "denoiser_service/server/wire_fields.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "denoiser_service/engine/field_error.h"

namespace dgrid {

std::string WireFieldName(absl::string_view run_field, DenoiserRpc rpc) {
  if (run_field == "class_index" || run_field == "prompt" || run_field == "negative_prompt") {
    return absl::StrCat("conditioning.", run_field);
  }
  // "trajectories[i].latent"; a segment's fields are the same on the wire.
  constexpr absl::string_view kLatent = "latent";
  if (absl::StartsWith(run_field, "trajectories[") && absl::EndsWith(run_field, "].latent")) {
    return absl::StrCat(run_field.substr(0, run_field.size() - kLatent.size()), "start_latent");
  }
  // Step runs from `step` to the next: an error in either end is about it.
  if (rpc == DenoiserRpc::kStep && (run_field == "start_step" || run_field == "end_step")) {
    return "step";
  }
  return std::string(run_field);
}

absl::Status ToWireFields(const absl::Status& engine_error, DenoiserRpc rpc) {
  const std::optional<std::string> field = ErrorField(engine_error);
  if (!field) return engine_error;
  return RenameErrorField(engine_error, WireFieldName(*field, rpc));
}

}  // namespace dgrid
