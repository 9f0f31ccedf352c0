#include "common/client_key.h"

#include <arpa/inet.h>

#include <cstdint>
#include <cstring>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"

namespace dgrid {

std::string ClientKey(absl::string_view peer) {
  std::string address(peer);
  if (absl::ConsumePrefix(&peer, "ipv4:")) {
    address = std::string(peer.substr(0, peer.rfind(':')));
  } else if (absl::ConsumePrefix(&peer, "ipv6:")) {
    // "[::1]:5000"; newer gRPC escapes the brackets (and a zone's "%").
    const std::string host =
        absl::StrReplaceAll(peer, {{"%5B", "["}, {"%5D", "]"}, {"%25", "%"}});
    const size_t close = host.rfind(']');
    address = !host.empty() && host[0] == '[' && close != std::string::npos
                  ? host.substr(1, close - 1)
                  : host;
  }
  // A zone ("fe80::1%eth0" over HTTP, "%2" over gRPC) names the local
  // interface, not the client: without it, both spell one address.
  if (const size_t zone = address.find('%'); zone != std::string::npos) address.resize(zone);
  // One spelling per address: "::ffff:10.0.0.1" is 10.0.0.1, "::0:1" is ::1.
  char text[INET6_ADDRSTRLEN];
  in6_addr v6;
  in_addr v4;
  if (inet_pton(AF_INET6, address.c_str(), &v6) == 1) {
    // 64:ff9b::/96: NAT64, where every IPv4 client arrives under one prefix.
    static constexpr uint8_t kNat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
    const bool embeds_v4 = IN6_IS_ADDR_V4MAPPED(&v6) || IN6_IS_ADDR_V4COMPAT(&v6) ||
                           std::memcmp(v6.s6_addr, kNat64, sizeof(kNat64)) == 0;
    if (embeds_v4) {
      std::memcpy(&v4, &v6.s6_addr[12], sizeof(v4));
      return inet_ntop(AF_INET, &v4, text, sizeof(text));
    }
    // A host is given a /64 and may use any address in it: one client, as
    // a network behind one IPv4 address is. Not where the /64 is shared by
    // design: loopback, unspecified, link-local, and unique local addresses
    // (fc00::/7, private as 10/8 is: an IPv6 cluster gives its pods
    // addresses of one /64, and every pod was one client).
    const bool unique_local = (v6.s6_addr[0] & 0xfe) == 0xfc;
    if (!IN6_IS_ADDR_LOOPBACK(&v6) && !IN6_IS_ADDR_UNSPECIFIED(&v6) &&
        !IN6_IS_ADDR_LINKLOCAL(&v6) && !unique_local) {
      std::memset(&v6.s6_addr[8], 0, 8);
      return absl::StrCat(inet_ntop(AF_INET6, &v6, text, sizeof(text)), "/64");
    }
    return inet_ntop(AF_INET6, &v6, text, sizeof(text));
  }
  if (inet_pton(AF_INET, address.c_str(), &v4) == 1) {
    return inet_ntop(AF_INET, &v4, text, sizeof(text));
  }
  return address;
}

}  // namespace dgrid
