// The client a peer address stands for, whichever transport reports it:
// the unit of the orchestrator's per-client limit and of the metrics
// endpoint's connections per client.
//
//   caller.client = ClientKey(context->peer());  // "ipv4:10.0.0.1:5000"
//   caller.client = ClientKey(request.remote_addr);  // "10.0.0.1"
#ifndef DGRID_COMMON_CLIENT_KEY_H_
#define DGRID_COMMON_CLIENT_KEY_H_

#include <string>

#include "absl/strings/string_view.h"

namespace dgrid {

// For a peer address, whichever transport reports it: gRPC's
// "ipv4:10.0.0.1:5000" or "ipv6:[::1]:5000", or HTTP's and a socket's
// bare "10.0.0.1". Its IP without the port, in one canonical spelling (an
// IPv4-mapped IPv6 address is its IPv4 one), so that a client has one budget
// across gRPC and HTTP; a global IPv6 address stands for its /64, which one
// host may use whole ("2001:db8::/64"), as a network behind one IPv4 address
// is one client (a unique local one, fc00::/7, stands for itself, as a
// private IPv4 address does: pods of one cluster). Zones are dropped;
// NAT64 and IPv4-compatible addresses are their IPv4 one.
std::string ClientKey(absl::string_view peer);

}  // namespace dgrid

#endif  // DGRID_COMMON_CLIENT_KEY_H_
