// Which other origins' scripts may call the HTTP API. A browser lets a script
// read a cross-origin answer only when it carries
// Access-Control-Allow-Origin, and sends a non-simple request (a JSON POST,
// a token) only after a preflight OPTIONS that allows it. The gateway also
// refuses outright an API request from an origin this policy does not allow.
//
//   ASSIGN_OR_RETURN(CorsPolicy cors, CorsPolicy::Create({"https://app.example"}));
//   if (CorsPolicy::CrossOrigin(origin_header, host_header) && !cors.Allows(origin_header)) {
//     // 403
//   }
#ifndef DGRID_GRID_ORCHESTRATOR_SERVER_CORS_POLICY_H_
#define DGRID_GRID_ORCHESTRATOR_SERVER_CORS_POLICY_H_

#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dgrid {

class CorsPolicy {
 public:
  // `origins`: "scheme://host[:port]" (http or https), or "*" for any; else
  // INVALID_ARGUMENT naming --http_cors_origins.
  static absl::StatusOr<CorsPolicy> Create(const std::vector<std::string>& origins);

  // True when a request with these Origin and Host headers comes from a page
  // of another origin. Browsers send Origin on cross-origin requests and on
  // same-origin POSTs. The host alone decides, not the scheme: behind a proxy
  // that ends TLS the page is https while the gateway speaks http.
  static bool CrossOrigin(absl::string_view origin, absl::string_view host);

  bool Allows(absl::string_view origin) const;
  // The Access-Control-Allow-Origin value for an allowed `origin`.
  std::string AllowOriginHeader(const std::string& origin) const { return any_ ? "*" : origin; }

 private:
  CorsPolicy() = default;
  bool any_ = false;
  std::set<std::string> origins_;  // lowercased
};

}  // namespace dgrid

#endif  // DGRID_GRID_ORCHESTRATOR_SERVER_CORS_POLICY_H_
