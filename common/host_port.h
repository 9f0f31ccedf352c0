// The servers' address flags (--listen, --metrics_addr, --http_addr,
// --denoisers), read one way: "host:port", the port digits in [0, 65535].
// gRPC and httplib would take a port past it wrapped round (99999 bound
// 34463, another process's port for a denoiser) and a missing one as
// gRPC's default, without a word.
//
//   ASSIGN_OR_RETURN(HostPort at, ParseHostPort("--http_addr", address));
//   BindHttp(server, at.host.empty() ? "0.0.0.0" : at.host, at.port);
//   RETURN_IF_ERROR(CheckGrpcTarget("--target", target, 1));
#ifndef DGRID_COMMON_HOST_PORT_H_
#define DGRID_COMMON_HOST_PORT_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dgrid {

struct HostPort {
  // Empty (every address), a name or an IP address; an IPv6 address is
  // written in brackets ("[::1]:50051") and kept here without them.
  std::string host;
  int port = 0;  // 0: any free port (where `least_port` allows it)
};

// INVALID_ARGUMENT naming `flag` unless `address` is host:port with a port
// in [least_port, 65535].
absl::StatusOr<HostPort> ParseHostPort(absl::string_view flag, absl::string_view address,
                                       int least_port = 0);

// A gRPC address or target: one with a scheme gRPC reads (unix:, dns:,
// ipv4:, ... or a URI) passes as it is, for gRPC to judge; any other must be
// host:port as above.
absl::Status CheckGrpcTarget(absl::string_view flag, absl::string_view target,
                             int least_port = 0);

}  // namespace dgrid

#endif  // DGRID_COMMON_HOST_PORT_H_
