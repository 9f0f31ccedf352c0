// The servers' address flags (--listen, --metrics_addr, --http_addr,
// --denoisers), read one way: "host:port", the port digits in [0, 65535].
// gRPC and httplib would take a port past it wrapped round (99999 bound
// 34463, another process's port for a denoiser) and a missing one as
// gRPC's default, without a word.
//
//   ASSIGN_OR_RETURN(HostPort at, ParseHostPort("--http_addr", address));
//   server.bind_to_port(at.host.empty() ? "0.0.0.0" : at.host, at.port);
#ifndef DGRID_COMMON_HOST_PORT_H_
#define DGRID_COMMON_HOST_PORT_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dgrid {

struct HostPort {
  std::string host;  // as written: empty, a name, an IPv4 or a bracketed IPv6 address
  int port = 0;      // 0: any free port (where `least_port` allows it)
};

// INVALID_ARGUMENT naming `flag` unless `address` is host:port with a port
// in [least_port, 65535].
absl::StatusOr<HostPort> ParseHostPort(absl::string_view flag, absl::string_view address,
                                       int least_port = 0);

// A gRPC address flag: gRPC's unix: and unix-abstract: addresses pass as
// they are; any other must be host:port as above.
absl::Status CheckGrpcAddress(absl::string_view flag, absl::string_view address,
                              int least_port = 0);

}  // namespace dgrid

#endif  // DGRID_COMMON_HOST_PORT_H_
