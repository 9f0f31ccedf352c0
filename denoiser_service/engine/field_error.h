// Errors about one field of a request, named as the engine's own types name
// it: RunRequest's "class_index" or "trajectories[2].latent", never the
// wire's "conditioning.class_index" or "trajectories[2].start_latent". The
// field also travels with the status (a payload), so an adapter can put its
// own name for it on what a client sees without parsing the message
// (denoiser_service/server/wire_fields.h).
//
//   // engine/
//   return InvalidFieldError("trajectories[2].latent", " holds a non-finite value");
//   // server/
//   if (std::optional<std::string> field = ErrorField(status)) {
//     status = RenameErrorField(status, "trajectories[2].start_latent");
//   }
#ifndef DGRID_DENOISER_ENGINE_FIELD_ERROR_H_
#define DGRID_DENOISER_ENGINE_FIELD_ERROR_H_

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace dgrid {

// INVALID_ARGUMENT whose message is `field` followed by `problem` (which
// starts with its own separator: " must be ...", ": ...").
absl::Status InvalidFieldError(absl::string_view field, absl::string_view problem);

// The same naming `field` under another code (the text encoder failing on a
// prompt: its own error's code).
absl::Status FieldError(absl::StatusCode code, absl::string_view field,
                        absl::string_view problem);

// The field that an InvalidFieldError or a FieldError names; nullopt for any
// other status.
std::optional<std::string> ErrorField(const absl::Status& status);

// `status` naming `name` where it named its field (ErrorField), in its
// message and its payload; any other status unchanged.
absl::Status RenameErrorField(const absl::Status& status, absl::string_view name);

}  // namespace dgrid

#endif  // DGRID_DENOISER_ENGINE_FIELD_ERROR_H_
