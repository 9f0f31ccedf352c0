// The bearer token a server may require of its callers (RFC 6750), checked
// one way by every server: the orchestrator's API and the denoisers, which
// then answer only the orchestrator.
//
//   if (!BearerTokenMatches(authorization_header, token)) {
//     return absl::UnauthenticatedError("invalid bearer token");
//   }
#ifndef DGRID_COMMON_BEARER_TOKEN_H_
#define DGRID_COMMON_BEARER_TOKEN_H_

#include <string>

#include "absl/strings/string_view.h"

namespace dgrid {

// True when `authorization` is "Bearer <token>": the scheme in any case
// (RFC 7235), then one or more spaces, then exactly `token`, compared in
// time that does not depend on where they differ.
bool BearerTokenMatches(absl::string_view authorization, absl::string_view token);

// `token` as the value of an authorization header.
std::string BearerAuthorization(absl::string_view token);

}  // namespace dgrid

#endif  // DGRID_COMMON_BEARER_TOKEN_H_
