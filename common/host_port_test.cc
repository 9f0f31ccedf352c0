#include "common/host_port.h"

#include "gtest/gtest.h"

namespace dgrid {
namespace {

TEST(HostPortTest, APortIsDigitsInRange) {
  for (const char* good : {"127.0.0.1:0", "0.0.0.0:65535", ":8080", "localhost:50051",
                           "[::1]:50051", "[::]:0", "dgrid-denoiser:50051"}) {
    EXPECT_TRUE(ParseHostPort("--listen", good).ok()) << good;
  }
  absl::StatusOr<HostPort> at = ParseHostPort("--listen", "[::1]:50051");
  ASSERT_TRUE(at.ok());
  EXPECT_EQ(at->host, "::1");  // as a socket takes it
  EXPECT_EQ(at->port, 50051);
  EXPECT_EQ(ParseHostPort("--listen", ":8080")->host, "");
  // Past 65535 gRPC and httplib wrapped round (99999 bound 34463); the rest
  // gRPC read as its default port or as part of an IPv6 address.
  for (const char* bad : {"127.0.0.1:99999", "127.0.0.1:65536", "127.0.0.1", "127.0.0.1:",
                          "127.0.0.1:-1", "127.0.0.1:+80", "127.0.0.1: 80", "127.0.0.1:080000",
                          "::1", ":::::", "::1:50051", "127.0.0.1:0x50", ""}) {
    const absl::Status status = ParseHostPort("--listen", bad).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(status.message().substr(0, 51),
              "--listen: expected host:port with a port in [0, 655")
        << status;
  }
}

TEST(HostPortTest, AReplicaNeedsAPortAndTargetsWithASchemePass) {
  EXPECT_EQ(ParseHostPort("--denoisers", "127.0.0.1:0", 1).status().message(),
            "--denoisers: expected host:port with a port in [1, 65535], got \"127.0.0.1:0\"");
  // A target with a scheme is gRPC's to judge.
  for (const char* target : {"unix:/tmp/dgrid.sock", "unix-abstract:dgrid",
                             "dns:///dgrid-denoiser:50051", "dns:name:50051",
                             "dns://8.8.8.8/name:50051", "ipv4:10.0.0.1:50051,10.0.0.2:50051",
                             "ipv6:[::1]:50051"}) {
    EXPECT_TRUE(CheckGrpcTarget("--denoisers", target, 1).ok()) << target;
  }
  EXPECT_TRUE(CheckGrpcTarget("--denoisers", "127.0.0.1:50051", 1).ok());
  EXPECT_FALSE(CheckGrpcTarget("--denoisers", "127.0.0.1:100673", 1).ok());
  // A long address is echoed short.
  EXPECT_LT(CheckGrpcTarget("--listen", std::string(10000, 'h')).message().size(), 200u);
}

}  // namespace
}  // namespace dgrid
