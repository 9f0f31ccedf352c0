#include "denoiser_service/engine/field_error.h"

#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace dgrid {
namespace {

// Never leaves the process: ToGrpcStatus sends the code and message only.
constexpr absl::string_view kFieldPayload = "dgrid.engine/field";

absl::Status WithField(absl::StatusCode code, absl::string_view field,
                       absl::string_view problem) {
  absl::Status status(code, absl::StrCat(field, problem));
  status.SetPayload(kFieldPayload, absl::Cord(field));
  return status;
}

}  // namespace

absl::Status InvalidFieldError(absl::string_view field, absl::string_view problem) {
  return WithField(absl::StatusCode::kInvalidArgument, field, problem);
}

absl::Status FieldError(absl::StatusCode code, absl::string_view field,
                        absl::string_view problem) {
  return WithField(code, field, problem);
}

std::optional<std::string> ErrorField(const absl::Status& status) {
  const absl::optional<absl::Cord> field = status.GetPayload(kFieldPayload);
  if (!field) return std::nullopt;
  return std::string(*field);
}

absl::Status RenameErrorField(const absl::Status& status, absl::string_view name) {
  const std::optional<std::string> field = ErrorField(status);
  if (!field || !absl::StartsWith(status.message(), *field)) return status;
  return WithField(status.code(), name, status.message().substr(field->size()));
}

}  // namespace dgrid
