#include "grid_orchestrator/server/cors_policy.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/short_text.h"

namespace dgrid {

absl::StatusOr<CorsPolicy> CorsPolicy::Create(const std::vector<std::string>& origins) {
  CorsPolicy policy;
  for (const std::string& origin : origins) {
    if (origin == "*") {
      policy.any_ = true;
      continue;
    }
    const std::string lower = absl::AsciiStrToLower(origin);
    const size_t host = lower.find("://");
    const absl::string_view scheme = absl::string_view(lower).substr(0, host);
    if (host == std::string::npos || (scheme != "http" && scheme != "https") ||
        host + 3 == lower.size() || lower.find_first_of("/ ", host + 3) != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--http_cors_origins: ", ShortQuote(origin), " is not scheme://host[:port] or *"));
    }
    policy.origins_.insert(lower);
  }
  return policy;
}

bool CorsPolicy::CrossOrigin(absl::string_view origin, absl::string_view host) {
  if (origin.empty()) return false;
  const size_t at = origin.find("://");
  return at == absl::string_view::npos || !absl::EqualsIgnoreCase(origin.substr(at + 3), host);
}

bool CorsPolicy::Allows(absl::string_view origin) const {
  return any_ || origins_.count(absl::AsciiStrToLower(origin)) > 0;
}

}  // namespace dgrid
