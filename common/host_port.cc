#include "common/host_port.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/short_text.h"

namespace dgrid {

absl::StatusOr<HostPort> ParseHostPort(absl::string_view flag, absl::string_view address,
                                       int least_port) {
  const auto refuse = [&] {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": expected host:port with a port in [",
                                                   least_port, ", 65535], got ",
                                                   ShortQuote(address, 80)));
  };
  const size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos) return refuse();
  const absl::string_view host = address.substr(0, colon), digits = address.substr(colon + 1);
  const bool bracketed = absl::StartsWith(host, "[") && absl::EndsWith(host, "]");
  // An IPv6 address without brackets ("::1") would end in its own last group.
  if (host.find(':') != absl::string_view::npos && !bracketed) return refuse();
  int port = -1;
  // SimpleAtoi takes a sign and spaces; a port is digits alone.
  if (digits.empty() || digits.size() > 5 ||
      !std::all_of(digits.begin(), digits.end(), absl::ascii_isdigit) ||
      !absl::SimpleAtoi(digits, &port) || port < least_port || port > 65535) {
    return refuse();
  }
  return HostPort{std::string(bracketed ? host.substr(1, host.size() - 2) : host), port};
}

absl::Status CheckGrpcTarget(absl::string_view flag, absl::string_view target,
                             int least_port) {
  for (absl::string_view scheme :
       {"unix:", "unix-abstract:", "dns:", "ipv4:", "ipv6:", "vsock:"}) {
    if (absl::StartsWith(target, scheme)) return absl::OkStatus();
  }
  if (target.find("://") != absl::string_view::npos) return absl::OkStatus();
  return ParseHostPort(flag, target, least_port).status();
}

}  // namespace dgrid
