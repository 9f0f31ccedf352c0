#include "common/bearer_token.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace dgrid {

bool BearerTokenMatches(absl::string_view authorization, absl::string_view token) {
  constexpr absl::string_view kScheme = "bearer ";
  if (authorization.size() != kScheme.size() + token.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < kScheme.size(); ++i) {
    diff |= static_cast<unsigned char>(absl::ascii_tolower(authorization[i]) ^ kScheme[i]);
  }
  for (size_t i = 0; i < token.size(); ++i) {
    diff |= static_cast<unsigned char>(authorization[kScheme.size() + i] ^ token[i]);
  }
  return diff == 0;
}

std::string BearerAuthorization(absl::string_view token) { return absl::StrCat("Bearer ", token); }

}  // namespace dgrid
