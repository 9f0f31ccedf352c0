#include "common/bearer_token.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace dgrid {

bool BearerTokenMatches(absl::string_view authorization, absl::string_view token) {
  constexpr absl::string_view kScheme = "bearer";
  if (authorization.size() <= kScheme.size() ||
      absl::AsciiStrToLower(authorization.substr(0, kScheme.size())) != kScheme ||
      authorization[kScheme.size()] != ' ') {
    return false;
  }
  absl::string_view given = authorization.substr(kScheme.size());
  while (!given.empty() && given.front() == ' ') given.remove_prefix(1);  // 1*SP
  if (given.size() != token.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < token.size(); ++i) {
    diff |= static_cast<unsigned char>(given[i] ^ token[i]);
  }
  return diff == 0;
}

std::string BearerAuthorization(absl::string_view token) { return absl::StrCat("Bearer ", token); }

}  // namespace dgrid
