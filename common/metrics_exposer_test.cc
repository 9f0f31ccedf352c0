#include "common/metrics_exposer.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <prometheus/counter.h>
#include <prometheus/registry.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace dgrid {
namespace {

// A connection to 127.0.0.1:port from `source`, another loopback address
// standing for another client; -1 when it fails.
int Connect(int port, const char* source) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in from{};
  from.sin_family = AF_INET;
  ::inet_pton(AF_INET, source, &from.sin_addr);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<uint16_t>(port));
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof(from)) != 0 ||
      ::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof(to)) != 0) {
    if (fd >= 0) ::close(fd);
    return -1;
  }
  timeval tv = absl::ToTimeval(absl::Seconds(10));
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

// What the server sends until it closes (or 10 s pass).
std::string ReadAll(int fd) {
  std::string text;
  char buffer[4096];
  ssize_t n;
  while ((n = ::recv(fd, buffer, sizeof(buffer), 0)) > 0) text.append(buffer, n);
  return text;
}

std::string Get(int port, const char* source, const std::string& request) {
  const int fd = Connect(port, source);
  if (fd < 0) return "";
  ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string answer = ReadAll(fd);
  ::close(fd);
  return answer;
}

// httplib's eight threads, each held by a client sending its request a byte
// every few seconds, took /metrics down for as long as the trickle went on.
TEST(MetricsEndpointTest, SlowClientsDoNotHoldTheScrape) {
  auto registry = std::make_shared<prometheus::Registry>();
  prometheus::BuildCounter().Name("dgrid_test_total").Help("a test").Register(*registry).Add({})
      .Increment(3);
  auto endpoint = MetricsEndpoint::Start("127.0.0.1:0", registry);
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  const int port = (*endpoint)->port();
  // Three connections from each of ten addresses (one past each cap).
  std::vector<int> slow;
  for (int i = 0; i < 30; ++i) {
    const std::string source = "127.0.0." + std::to_string(10 + i / 3);
    const int fd = Connect(port, source.c_str());
    if (fd < 0) break;
    ::send(fd, "GET /met", 8, MSG_NOSIGNAL);  // and no more
    slow.push_back(fd);
  }
  ASSERT_EQ(slow.size(), 30u);
  const absl::Time start = absl::Now();
  const std::string scrape = Get(port, "127.0.0.6", "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  EXPECT_EQ(scrape.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << scrape;
  EXPECT_NE(scrape.find("\ndgrid_test_total 3"), std::string::npos) << scrape;
  // Each slow request is cut off at the head timeout (1 s), unanswered.
  for (const int fd : slow) {
    EXPECT_EQ(ReadAll(fd), "");
    ::close(fd);
  }
  EXPECT_LT(absl::Now() - start, absl::Seconds(6));
  // HEAD has no body; another path or method is refused.
  const std::string head = Get(port, "127.0.0.6", "HEAD /metrics HTTP/1.1\r\n\r\n");
  EXPECT_EQ(head.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << head;
  EXPECT_EQ(head.find("dgrid_test_total"), std::string::npos) << head;
  EXPECT_EQ(Get(port, "127.0.0.6", "GET /other HTTP/1.1\r\n\r\n").substr(0, 12), "HTTP/1.1 404");
  EXPECT_EQ(Get(port, "127.0.0.6", "POST /metrics HTTP/1.1\r\n\r\n").substr(0, 12),
            "HTTP/1.1 405");
}

// With a readiness function, GET /healthz says it (plain HTTP, for probes
// of a server whose own port speaks TLS); without one there is none.
TEST(MetricsEndpointTest, HealthSaysWhetherTheServerServes) {
  auto registry = std::make_shared<prometheus::Registry>();
  bool ready = false;
  auto endpoint = MetricsEndpoint::Start("127.0.0.1:0", registry, [&ready] { return ready; });
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  const int port = (*endpoint)->port();
  const std::string get = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
  const std::string loading = Get(port, "127.0.0.2", get);
  EXPECT_EQ(loading.rfind("HTTP/1.1 503 Service Unavailable\r\n", 0), 0u) << loading;
  ready = true;
  const std::string serving = Get(port, "127.0.0.2", get);
  EXPECT_EQ(serving.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << serving;
  EXPECT_EQ(serving.substr(serving.size() - 3), "ok\n") << serving;
  EXPECT_EQ(Get(port, "127.0.0.2", "POST /healthz HTTP/1.1\r\n\r\n").substr(0, 12),
            "HTTP/1.1 405");

  auto plain = MetricsEndpoint::Start("127.0.0.1:0", registry);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(Get((*plain)->port(), "127.0.0.2", get).substr(0, 12), "HTTP/1.1 404");
}

}  // namespace
}  // namespace dgrid
