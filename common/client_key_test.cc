#include "common/client_key.h"

#include "gtest/gtest.h"

namespace dgrid {
namespace {

TEST(ClientKeyTest, GrpcAndHttpSpellingsOfOneAddressAreOneClient) {
  EXPECT_EQ(ClientKey("ipv4:127.0.0.1:50312"), "127.0.0.1");
  EXPECT_EQ(ClientKey("127.0.0.1"), "127.0.0.1");
  EXPECT_EQ(ClientKey("::ffff:127.0.0.1"), "127.0.0.1");
  EXPECT_EQ(ClientKey("ipv6:[::ffff:10.0.0.7]:443"), "10.0.0.7");
  EXPECT_EQ(ClientKey("ipv6:[::1]:50312"), "::1");
  EXPECT_EQ(ClientKey("ipv6:%5B::1%5D:50312"), "::1");
  EXPECT_EQ(ClientKey("0:0::1"), "::1");
  EXPECT_EQ(ClientKey("ipv6:[2001:DB8::5]:1"), ClientKey("2001:db8::5"));
  // A host's /64 is one client: another address in it takes no new budget.
  EXPECT_EQ(ClientKey("2001:db8::5"), "2001:db8::/64");
  EXPECT_EQ(ClientKey("2001:db8:0:0:abcd::1"), ClientKey("2001:db8::5"));
  EXPECT_NE(ClientKey("2001:db8:0:1::5"), ClientKey("2001:db8::5"));
  // Unique local (a cluster's pods, of one /64): one address each, as a
  // private IPv4 address is; every pod was one client.
  EXPECT_EQ(ClientKey("fd00:10:244::5"), "fd00:10:244::5");
  EXPECT_NE(ClientKey("fd00:10:244::5"), ClientKey("fd00:10:244::6"));
  EXPECT_NE(ClientKey("fc00::5"), ClientKey("fc00::6"));
  // Link-local: one address each, and one spelling whatever the zone says.
  EXPECT_EQ(ClientKey("fe80::1%eth0"), "fe80::1");
  EXPECT_EQ(ClientKey("ipv6:[fe80::1%252]:443"), "fe80::1");
  EXPECT_NE(ClientKey("fe80::1"), ClientKey("fe80::2"));
  // NAT64: every IPv4 client under one prefix is its own IPv4 address.
  EXPECT_EQ(ClientKey("64:ff9b::10.0.0.7"), "10.0.0.7");
  EXPECT_NE(ClientKey("64:ff9b::10.0.0.7"), ClientKey("64:ff9b::10.0.0.8"));
  EXPECT_NE(ClientKey("ipv4:127.0.0.1:1"), ClientKey("ipv4:127.0.0.2:1"));
  EXPECT_EQ(ClientKey("unix:/tmp/socket"), "unix:/tmp/socket");
}

}  // namespace
}  // namespace dgrid
