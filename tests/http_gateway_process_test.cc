// The orchestrator's HTTP gateway against hostile clients, with real
// processes on loopback and plain sockets, so that each request goes on the
// wire exactly as written: bodies past the limit, idle and slow sockets
// (slowloris), stream refusals, lenient JSON, cross-origin calls, DNS
// rebinding, ambiguous framing, control bytes in paths, clients that hang
// up, and one client's budget across gRPC and HTTP. Abusive sockets come
// from other loopback addresses (127.0.0.2...) than the well-behaved client
// (127.0.0.1), as they would from other hosts.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/support/stack.h"

namespace dgrid {
namespace {

using testing::ChildProcess;
using testing::Stack;

// With a "%41" in it: httplib percent-decoded header values, and this token
// never matched.
constexpr char kToken[] = "http-gateway-test-%41-token";
constexpr char kAllowedOrigin[] = "http://allowed.example";
// The first stack's --http_head_timeout_s (default 10), short to keep the
// slow-client tests short. Answers that must not wait on slow clients are
// held under 3 s: well inside a loaded 2-core machine's noise, and below
// this timeout, which a request queued behind them would wait out.
constexpr int kHeadTimeoutS = 4;
// --http_max_connections_per_client's default, which this stack keeps.
constexpr int kConnectionsPerAddress = 24;

// A TCP connection to 127.0.0.1:port from `source` (another loopback
// address: another client); -1 when it cannot connect.
int Connect(int port, const char* source = "127.0.0.1") {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in from{};
  from.sin_family = AF_INET;
  if (::inet_pton(AF_INET, source, &from.sin_addr) != 1 ||
      ::bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof(from)) != 0) {
    ::close(fd);
    return -1;
  }
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool SendAll(int fd, const std::string& data) {
  for (size_t sent = 0; sent < data.size();) {
    const ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += n;
  }
  return true;
}

struct HttpAnswer {
  int status = 0;  // 0: no answer
  std::map<std::string, std::string> headers;  // names lowercased
  std::string body;
  absl::Duration took;
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

// Reads an answer until the server closes the connection or `timeout`.
HttpAnswer ReadAnswer(int fd, absl::Duration timeout, absl::Time start) {
  const absl::Time deadline = start + timeout;
  std::string raw;
  char buffer[16384];
  while (absl::Now() < deadline) {
    timeval tv = absl::ToTimeval(std::max(deadline - absl::Now(), absl::Milliseconds(1)));
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    const ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0) break;
    raw.append(buffer, n);
  }
  HttpAnswer answer;
  answer.took = absl::Now() - start;
  const size_t end = raw.find("\r\n\r\n");
  if (end == std::string::npos) return answer;
  std::vector<std::string> lines = absl::StrSplit(raw.substr(0, end), "\r\n");
  std::vector<std::string> status_line = absl::StrSplit(lines[0], ' ');
  if (status_line.size() < 2 || !absl::SimpleAtoi(status_line[1], &answer.status)) return answer;
  for (size_t i = 1; i < lines.size(); ++i) {
    const size_t colon = lines[i].find(':');
    if (colon == std::string::npos) continue;
    answer.headers[absl::AsciiStrToLower(lines[i].substr(0, colon))] =
        std::string(absl::StripAsciiWhitespace(lines[i].substr(colon + 1)));
  }
  answer.body = raw.substr(end + 4);
  return answer;
}

// Sends `request` as written and reads the answer.
HttpAnswer Exchange(int port, const std::string& request,
                    absl::Duration timeout = absl::Seconds(30),
                    const char* source = "127.0.0.1") {
  const absl::Time start = absl::Now();
  const int fd = Connect(port, source);
  if (fd < 0) return {};
  HttpAnswer answer;
  if (SendAll(fd, request)) answer = ReadAnswer(fd, timeout, start);
  ::close(fd);
  return answer;
}

struct Header {
  std::string name, value;
};

// One request with Connection: close, so that the answer ends with EOF.
std::string Request(const std::string& method, const std::string& target,
                    const std::vector<Header>& headers = {}, const std::string& body = "",
                    bool with_length = true) {
  std::string request = absl::StrCat(method, " ", target,
                                     " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
  for (const Header& h : headers) absl::StrAppend(&request, h.name, ": ", h.value, "\r\n");
  if (with_length && (method == "POST" || !body.empty())) {
    absl::StrAppend(&request, "Content-Length: ", body.size(), "\r\n");
  }
  absl::StrAppend(&request, "\r\n", body);
  return request;
}

const Header kAuth{"Authorization", absl::StrCat("Bearer ", kToken)};
const Header kJson{"Content-Type", "application/json"};

// A 10-step grid of 2 rows x 2 branches.
constexpr char kSmallGrid[] = R"({"seed":"1","steps":10,"branches":2,"branch_steps":[0,5]})";

// Peak resident memory of a process, in KiB.
int64_t PeakRssKib(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) {
      int64_t kib = 0;
      std::vector<std::string> parts = absl::StrSplit(line, ' ', absl::SkipEmpty());
      if (parts.size() >= 2 && absl::SimpleAtoi(parts[1], &kib)) return kib;
    }
  }
  return -1;
}

// The longest run of one byte in `text`.
size_t LongestRun(const std::string& text, char c) {
  size_t best = 0, run = 0;
  for (const char x : text) {
    run = x == c ? run + 1 : 0;
    best = std::max(best, run);
  }
  return best;
}

// A grid POST with the token and a chunked body: the head and `start`, then
// what `send` writes from another thread, which stops when the server
// closes the connection; and the answer.
HttpAnswer PostChunked(int port, const std::string& start, const std::function<void(int)>& send) {
  const int fd = Connect(port);
  if (fd < 0) return {};
  const std::string head = absl::StrCat(
      "POST /api/v1/grid HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n",
      kAuth.name, ": ", kAuth.value, "\r\nTransfer-Encoding: chunked\r\n\r\n", start);
  std::thread sender([&] {
    if (SendAll(fd, head)) send(fd);
  });
  const HttpAnswer answer = ReadAnswer(fd, absl::Seconds(30), absl::Now());
  ::shutdown(fd, SHUT_RDWR);
  sender.join();
  ::close(fd);
  return answer;
}

// `n` connections from `source` that send nothing: a few at a time, since
// httplib listens with a backlog of 5 (a connection past it waits for a
// SYN-ACK retry, about 1 s). Then, if `settle`, waits until the server has
// had time to accept them all. The server closes idle ones after a few
// seconds, so use them at once.
std::vector<int> OpenIdle(int port, int n, const char* source = "127.0.0.1", bool settle = true) {
  std::vector<int> sockets;
  for (int i = 0; i < n; ++i) {
    const int fd = Connect(port, source);
    if (fd < 0) break;
    sockets.push_back(fd);
    if (i % 4 == 3) absl::SleepFor(absl::Milliseconds(10));
  }
  if (settle) absl::SleepFor(absl::Milliseconds(1200));
  return sockets;
}

// Waits until the gateway on `port` serves the models (its pool has seen
// the denoiser).
bool WaitUntilServing(int port, const std::vector<Header>& headers) {
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (absl::Now() < deadline) {
    if (Exchange(port, Request("GET", "/api/v1/models", headers), absl::Seconds(5)).status == 200) {
      return true;
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  return false;
}

class HttpGatewayTest : public ::testing::Test {
 protected:
  // One stack whose orchestrator requires a token and allows one other
  // origin; and a second orchestrator on the same denoiser with the
  // defaults (no token, same-origin only) and a cap of 8 connections.
  static void SetUpTestSuite() {
    const std::string dir = testing::TempDir("http-gateway-files");
    web_dir_ = new std::string(dir + "/web");
    std::filesystem::create_directories(*web_dir_);
    std::ofstream(*web_dir_ + "/index.html") << "<!doctype html><title>grid</title>\n";
    std::ofstream(dir + "/token") << kToken << "\n";
    testing::StackOptions options;
    options.denoisers = 1;
    options.orchestrator_flags = {"--http_addr=127.0.0.1:0", "--web_dir=" + *web_dir_,
                                  "--auth_token_file=" + dir + "/token",
                                  absl::StrCat("--http_cors_origins=", kAllowedOrigin),
                                  "--http_allowed_hosts=grid.example",
                                  absl::StrCat("--http_head_timeout_s=", kHeadTimeoutS)};
    auto stack = Stack::Start(options, "http-gateway");
    ASSERT_TRUE(stack.ok()) << stack.status();
    stack_ = stack->release();
    port_ = stack_->orchestrator_http_port();
    ASSERT_GT(port_, 0);
    ASSERT_TRUE(WaitUntilServing(port_, {kAuth}));

    const std::string plain_ports = dir + "/plain.ports";
    auto plain = ChildProcess::Start(
        {testing::BinPath("dgrid-orchestrator"), "--denoisers=" + stack_->denoiser_address(0),
         "--listen=127.0.0.1:0", "--metrics_addr=", "--http_addr=127.0.0.1:0",
         "--web_dir=" + *web_dir_, "--http_max_connections=8", "--port_file=" + plain_ports},
        dir + "/plain-orchestrator.log");
    ASSERT_TRUE(plain.ok()) << plain.status();
    plain_ = plain->release();
    auto bound = plain_->WaitForPorts(plain_ports, absl::Seconds(30));
    ASSERT_TRUE(bound.ok()) << bound.status();
    plain_port_ = (*bound)["http"];
    ASSERT_TRUE(WaitUntilServing(plain_port_, {}));
  }
  static void TearDownTestSuite() {
    delete plain_;
    delete stack_;
    delete web_dir_;
  }

  static Stack* stack_;
  static ChildProcess* plain_;
  static std::string* web_dir_;
  static int port_;
  static int plain_port_;
};

Stack* HttpGatewayTest::stack_ = nullptr;
ChildProcess* HttpGatewayTest::plain_ = nullptr;
std::string* HttpGatewayTest::web_dir_ = nullptr;
int HttpGatewayTest::port_ = 0;
int HttpGatewayTest::plain_port_ = 0;

TEST_F(HttpGatewayTest, ChunkedBodyPastTheLimitGets413AndIsNotBuffered) {
  const pid_t pid = stack_->orchestrator().pid();
  const int64_t before = PeakRssKib(pid);
  ASSERT_GT(before, 0);
  // 32 MiB of prompt in 1 MiB chunks.
  const HttpAnswer answer = PostChunked(port_, "", [](int fd) {
    const std::string chunk(1 << 20, 'p');
    const std::string framed = absl::StrCat(absl::Hex(chunk.size()), "\r\n", chunk, "\r\n");
    if (!SendAll(fd, "a\r\n{\"prompt\":\r\n1\r\n\"\r\n")) return;
    for (int i = 0; i < 32; ++i) {
      if (!SendAll(fd, framed)) return;
    }
    SendAll(fd, "2\r\n\"}\r\n0\r\n\r\n");
  });
  EXPECT_EQ(answer.status, 413) << answer.body.substr(0, 300);
  EXPECT_NE(answer.body.find("larger than the limit"), std::string::npos) << answer.body;
  EXPECT_LE(answer.body.size(), 300u);
  EXPECT_LE(LongestRun(answer.body, 'p'), 150u);
  const int64_t grown_kib = PeakRssKib(pid) - before;
  EXPECT_LT(grown_kib, 8 << 10) << "peak RSS grew by " << grown_kib << " KiB";

  // A declared length past the limit is refused without reading it.
  const HttpAnswer declared =
      Exchange(port_, absl::StrCat("POST /api/v1/grid HTTP/1.1\r\nHost: 127.0.0.1\r\n",
                                   "Content-Type: application/json\r\nContent-Length: ",
                                   int64_t{1} << 40, "\r\n\r\n{"),
               absl::Seconds(5));
  EXPECT_EQ(declared.status, 413);
  EXPECT_LT(declared.took, absl::Seconds(4));
  EXPECT_TRUE(stack_->orchestrator().Running());
}

// httplib reads a chunk's size line whole: 32 MiB of it, with no line end,
// were once buffered. The body's bytes on the wire are bounded now, framing
// included.
TEST_F(HttpGatewayTest, AChunkSizeLineWithoutEndIsCutOff) {
  const pid_t pid = stack_->orchestrator().pid();
  const int64_t before = PeakRssKib(pid);
  ASSERT_GT(before, 0);
  const HttpAnswer answer = PostChunked(port_, "1;", [](int fd) {
    const std::string extension(1 << 20, 'x');
    for (int i = 0; i < 32; ++i) {
      if (!SendAll(fd, extension)) return;
    }
  });
  EXPECT_EQ(answer.status, 413) << answer.body.substr(0, 300);
  EXPECT_LT(answer.took, absl::Seconds(20));
  const int64_t grown_kib = PeakRssKib(pid) - before;
  EXPECT_LT(grown_kib, 8 << 10) << "peak RSS grew by " << grown_kib << " KiB";
  EXPECT_TRUE(stack_->orchestrator().Running());
}

// A second orchestrator on the gateway's port fails to start: it once bound
// beside the first (SO_REUSEPORT) and took part of its connections.
TEST_F(HttpGatewayTest, ASecondGatewayOnThePortFailsToStart) {
  const std::string dir = testing::TempDir("http-gateway-second");
  auto second = ChildProcess::Start(
      {testing::BinPath("dgrid-orchestrator"), "--denoisers=" + stack_->denoiser_address(0),
       "--listen=127.0.0.1:0", "--metrics_addr=", "--web_dir=" + *web_dir_,
       absl::StrCat("--http_addr=127.0.0.1:", port_)},
      dir + "/orchestrator.log");
  ASSERT_TRUE(second.ok()) << second.status();
  absl::StatusOr<int> code = (*second)->Wait(absl::Seconds(30));
  ASSERT_TRUE(code.ok()) << "still running: " << (*second)->Log();
  EXPECT_NE(*code, 0);
  EXPECT_NE((*second)->Log().find(absl::StrCat("cannot listen for HTTP on 127.0.0.1:", port_,
                                               " (in use by another process?)")),
            std::string::npos)
      << (*second)->Log();
  EXPECT_EQ(Exchange(port_, Request("GET", "/api/v1/models", {kAuth})).status, 200);
}

// A HEAD request's body is never read by httplib: on a kept connection it
// was served as a request of its own (request smuggling). A body is refused,
// and the connection ends with the refusal.
TEST_F(HttpGatewayTest, AHeadRequestsBodyIsNotServedAsARequest) {
  const std::string inner =
      "GET /api/v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  const HttpAnswer answer = Exchange(
      plain_port_,
      absl::StrCat("HEAD / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ", inner.size(),
                   "\r\n\r\n", inner),
      absl::Seconds(10));
  EXPECT_EQ(answer.status, 400);
  EXPECT_EQ(answer.header("connection"), "close");
  EXPECT_EQ(answer.header("keep-alive"), "");  // it said both
  // Nothing follows the refusal's head: the models were not served.
  EXPECT_EQ(answer.body.find("HTTP/1.1"), std::string::npos) << answer.body.substr(0, 300);
  EXPECT_LT(answer.took, absl::Seconds(5));
  // Without a body, HEAD is answered and the connection serves the next request.
  const HttpAnswer kept = Exchange(
      plain_port_, absl::StrCat("HEAD / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", inner),
      absl::Seconds(10));
  EXPECT_EQ(kept.status, 200);
  EXPECT_NE(kept.body.find("HTTP/1.1 200"), std::string::npos) << kept.body.substr(0, 300);
}

TEST_F(HttpGatewayTest, IdleAndSlowSocketsDoNotDelayHealth) {
  // From 5 addresses, so that none is past its cap of connections.
  std::vector<int> sockets;
  for (const char* source : {"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"}) {
    for (const int fd : OpenIdle(port_, 16, source, /*settle=*/false)) sockets.push_back(fd);
  }
  // Slow ones: a request line and half a header, then nothing.
  for (const int fd : OpenIdle(port_, 16, "127.0.0.6")) {
    EXPECT_TRUE(SendAll(fd, "GET /api/v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "));
    sockets.push_back(fd);
  }
  ASSERT_EQ(sockets.size(), 80u);
  for (int attempt = 0; attempt < 3; ++attempt) {
    const HttpAnswer health = Exchange(port_, Request("GET", "/healthz"), absl::Seconds(30));
    EXPECT_EQ(health.status, 200);
    EXPECT_LT(health.took, absl::Seconds(3)) << "took " << health.took;
  }
  const HttpAnswer models = Exchange(port_, Request("GET", "/api/v1/models", {kAuth}));
  EXPECT_EQ(models.status, 200) << models.body;
  EXPECT_LT(models.took, absl::Seconds(3)) << "took " << models.took;
  for (const int fd : sockets) ::close(fd);
}

// Past the cap a connection gets 503, and health still answers, even
// behind 200 idle connections past the cap: each refusal once waited for its
// request (kRefusalWait) on one of 8 threads, so they queued for about 6 s,
// the probe behind them. A refusal with others queued behind it hurries.
TEST_F(HttpGatewayTest, ConnectionsPastTheCapGet503AndHealthStillAnswers) {
  const std::vector<int> sockets = OpenIdle(plain_port_, 8);  // the 8 places
  ASSERT_EQ(sockets.size(), 8u);
  const HttpAnswer refused = Exchange(plain_port_, Request("GET", "/api/v1/models"));
  EXPECT_EQ(refused.status, 503) << refused.body;
  EXPECT_NE(refused.body.find("too many open connections"), std::string::npos) << refused.body;
  EXPECT_LT(refused.took, absl::Seconds(3)) << "took " << refused.took;
  const std::vector<int> flood = OpenIdle(plain_port_, 200, "127.0.0.1", /*settle=*/false);
  ASSERT_EQ(flood.size(), 200u);
  const HttpAnswer health = Exchange(plain_port_, Request("GET", "/healthz"));
  EXPECT_EQ(health.status, 200);
  EXPECT_LT(health.took, absl::Seconds(3)) << "took " << health.took;
  // The flood's last connection has its 503 by now.
  const HttpAnswer last = ReadAnswer(flood.back(), absl::Seconds(2), absl::Now());
  EXPECT_EQ(last.status, 503) << last.body;
  for (const int fd : sockets) ::close(fd);
  for (const int fd : flood) ::close(fd);
  // Once they are gone, requests are served again.
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(Exchange(plain_port_, Request("GET", "/api/v1/models")).status, 200);
}

TEST_F(HttpGatewayTest, StreamRefusalsGetTheirStatusBeforeTheStream) {
  const std::string bad = R"({"steps":0})";
  const HttpAnswer invalid =
      Exchange(port_, Request("POST", "/api/v1/grid/stream", {kAuth, kJson}, bad));
  EXPECT_EQ(invalid.status, 400) << invalid.body;
  EXPECT_EQ(invalid.header("content-type"), "application/json");
  EXPECT_NE(invalid.body.find("\"code\":\"INVALID_ARGUMENT\""), std::string::npos)
      << invalid.body;
  EXPECT_NE(invalid.body.find("steps"), std::string::npos) << invalid.body;
  EXPECT_EQ(invalid.body.find("event:"), std::string::npos) << invalid.body;

  const HttpAnswer no_token =
      Exchange(port_, Request("POST", "/api/v1/grid/stream", {kJson}, kSmallGrid));
  EXPECT_EQ(no_token.status, 401) << no_token.body;
  EXPECT_NE(no_token.body.find("UNAUTHENTICATED"), std::string::npos) << no_token.body;
  EXPECT_EQ(no_token.header("www-authenticate"), "Bearer");  // RFC 9110 asks for it
  // Without the token, a body that does not parse is refused for the token:
  // the caller learns nothing of what it sent (every route).
  for (const char* path : {"/api/v1/grid", "/api/v1/grid/stream", "/api/v1/curve/stream"}) {
    const HttpAnswer unparsed = Exchange(port_, Request("POST", path, {kJson}, R"({"steps":)"));
    EXPECT_EQ(unparsed.status, 401) << path << ": " << unparsed.body;
    EXPECT_EQ(unparsed.header("www-authenticate"), "Bearer") << path;
    const HttpAnswer with_token =
        Exchange(port_, Request("POST", path, {kAuth, kJson}, R"({"steps":)"));
    EXPECT_EQ(with_token.status, 400) << path << ": " << with_token.body;
  }

  // A good request still streams, through to the grid.
  const HttpAnswer good =
      Exchange(port_, Request("POST", "/api/v1/grid/stream", {kAuth, kJson}, kSmallGrid),
               absl::Seconds(60));
  EXPECT_EQ(good.status, 200);
  EXPECT_EQ(good.header("content-type"), "text/event-stream");
  EXPECT_NE(good.body.find("event: plan"), std::string::npos);
  EXPECT_NE(good.body.find("event: grid"), std::string::npos);
  EXPECT_EQ(good.body.find("event: error"), std::string::npos) << good.body.substr(0, 500);
}

// The curve stream keeps the grid stream's rules: refusals before the
// stream, naming the field, then plan, progress per trunk and the curve.
TEST_F(HttpGatewayTest, CurveStreamRefusesBeforeTheStreamThenStreamsTheCurve) {
  const HttpAnswer invalid = Exchange(
      port_, Request("POST", "/api/v1/curve/stream", {kAuth, kJson},
                     absl::StrCat(R"({"trunks":1,"grid":)", kSmallGrid, "}")));
  EXPECT_EQ(invalid.status, 400) << invalid.body;
  EXPECT_NE(invalid.body.find("trunks"), std::string::npos) << invalid.body;
  EXPECT_EQ(invalid.body.find("event:"), std::string::npos) << invalid.body;
  const HttpAnswer bad_grid = Exchange(
      port_, Request("POST", "/api/v1/curve/stream", {kAuth, kJson},
                     R"({"trunks":2,"grid":{"steps":10,"branches":0}})"));
  EXPECT_EQ(bad_grid.status, 400) << bad_grid.body;
  EXPECT_NE(bad_grid.body.find("grid.branches"), std::string::npos) << bad_grid.body;
  const HttpAnswer list_for_value = Exchange(
      port_, Request("POST", "/api/v1/curve/stream", {kAuth, kJson}, R"({"trunks":[2]})"));
  EXPECT_EQ(list_for_value.status, 400) << list_for_value.body;

  const HttpAnswer good = Exchange(
      port_, Request("POST", "/api/v1/curve/stream", {kAuth, kJson},
                     absl::StrCat(R"({"trunks":2,"grid":)", kSmallGrid, "}")),
      absl::Seconds(60));
  EXPECT_EQ(good.status, 200);
  EXPECT_EQ(good.header("content-type"), "text/event-stream");
  const size_t plan = good.body.find("event: plan");
  const size_t progress = good.body.find("event: progress");
  const size_t curve = good.body.find("event: curve");
  ASSERT_NE(plan, std::string::npos) << good.body.substr(0, 500);
  ASSERT_NE(curve, std::string::npos) << good.body.substr(0, 500);
  EXPECT_LT(plan, progress);
  EXPECT_LT(progress, curve);
  EXPECT_NE(good.body.find("\"trunks_done\":2"), std::string::npos) << good.body.substr(0, 800);
  EXPECT_EQ(good.body.find("event: error"), std::string::npos) << good.body.substr(0, 500);
}

TEST_F(HttpGatewayTest, LenientJsonAndOtherContentTypesAreRefused) {
  struct Case {
    const char* name;
    std::string body;
    std::vector<Header> headers;
    int status;
    const char* message;
  };
  // protobuf alone flattens this to an empty list, after a minute of CPU.
  const std::string deep = absl::StrCat("{\"branch_steps\":", std::string(100000, '['),
                                        std::string(100000, ']'), "}");
  const std::vector<Case> cases = {
      {"list in a list", R"({"branch_steps":[[5]]})", {kAuth, kJson}, 400,
       "branch_steps[0]: expected a number, got a list"},
      {"value for a list", R"({"branch_steps":5})", {kAuth, kJson}, 400,
       "branch_steps: expected a list, got a number"},
      {"null in a list", R"({"branch_steps":[0,null]})", {kAuth, kJson}, 400,
       "branch_steps[1]: expected a number, got null"},
      {"list in a message list", R"({"trunk":{"segments":[[{"from_step":0}]]}})",
       {kAuth, kJson}, 400, "trunk.segments[0]: expected an object, got a list"},
      {"object for a wrapper", R"({"steps":{"value":5}})", {kAuth, kJson}, 400,
       "steps: expected a number, got an object"},
      {"deep nesting", deep, {kAuth, kJson}, 400, "nested deeper than 32 levels"},
      {"long unknown field", absl::StrCat("{\"", std::string(5000, 'u'), "\":1}"),
       {kAuth, kJson}, 400, "unknown field"},
      // protobuf's parser names neither ("Encountered non UTF-8 code points.").
      {"bytes that are not UTF-8", "{\"prompt\":\"ab\xff\xfe\"}", {kAuth, kJson}, 400,
       "prompt: is not valid UTF-8"},
      {"a number past a double", R"({"guidance":1e400})", {kAuth, kJson}, 400,
       "guidance: the number"},
      {"a field under both names", R"({"switch_prompt":"a","switchPrompt":"b"})",
       {kAuth, kJson}, 400, "switch_prompt: given twice"},
      // protobuf's parser took these, and ran the grid.
      {"a comma before a bracket", R"({"steps":10,"branch_steps":[0,5,],"branches":2})",
       {kAuth, kJson}, 400, "not valid JSON at byte"},
      {"a key without quotes", R"({steps:10,"branch_steps":[0,5],"branches":2})",
       {kAuth, kJson}, 400, "not valid JSON at byte"},
      {"no Content-Type", kSmallGrid, {kAuth}, 415, "must be application/json"},
      {"text/plain", kSmallGrid, {kAuth, {"Content-Type", "text/plain"}}, 415,
       "must be application/json"},
      {"form", kSmallGrid, {kAuth, {"Content-Type", "application/x-www-form-urlencoded"}}, 415,
       "must be application/json"},
      {"another charset", kSmallGrid,
       {kAuth, {"Content-Type", "application/json; charset=latin1"}}, 415,
       "must be application/json"},
      // The charset is allowed: this one fails later, on its steps.
      {"utf-8 charset", R"({"steps":0})",
       {kAuth, {"Content-Type", "application/json; charset=utf-8"}}, 400, "steps"},
  };
  for (const Case& c : cases) {
    for (const char* path : {"/api/v1/grid", "/api/v1/grid/stream"}) {
      const HttpAnswer answer =
          Exchange(port_, Request("POST", path, c.headers, c.body), absl::Seconds(20));
      EXPECT_EQ(answer.status, c.status) << c.name << " " << path << ": " << answer.body;
      EXPECT_NE(answer.body.find(c.message), std::string::npos)
          << c.name << " " << path << ": " << answer.body;
      EXPECT_LE(answer.body.size(), 400u) << c.name << " " << path;
      EXPECT_LT(answer.took, absl::Seconds(4)) << c.name << " " << path;
    }
  }
}

TEST_F(HttpGatewayTest, CrossOriginCallsFollowThePolicy) {
  const Header allowed{"Origin", kAllowedOrigin};
  const Header other{"Origin", "http://evil.example"};
  const std::vector<Header> preflight = {{"Access-Control-Request-Method", "POST"},
                                         {"Access-Control-Request-Headers",
                                          "authorization, content-type"}};
  auto with = [](std::vector<Header> headers, const Header& h) {
    headers.push_back(h);
    return headers;
  };

  // Configured: the allowed origin gets the header, on calls and preflights.
  const HttpAnswer models = Exchange(port_, Request("GET", "/api/v1/models", {kAuth, allowed}));
  EXPECT_EQ(models.status, 200) << models.body;
  EXPECT_EQ(models.header("access-control-allow-origin"), kAllowedOrigin);
  // The README promises 429 and 503 a Retry-After; a page elsewhere reads it.
  EXPECT_EQ(models.header("access-control-expose-headers"), "Retry-After");
  const HttpAnswer allowed_preflight =
      Exchange(port_, Request("OPTIONS", "/api/v1/grid/stream", with(preflight, allowed)));
  EXPECT_EQ(allowed_preflight.status, 204);
  EXPECT_EQ(allowed_preflight.header("access-control-allow-origin"), kAllowedOrigin);
  EXPECT_NE(allowed_preflight.header("access-control-allow-headers").find("Authorization"),
            std::string::npos);
  // Without an Origin, OPTIONS says which methods the path takes.
  for (const auto& [path, allow] :
       {std::pair<const char*, const char*>{"/api/v1/grid/stream", "POST, OPTIONS"},
        {"/api/v1/models", "GET, HEAD, OPTIONS"}}) {
    const HttpAnswer options = Exchange(port_, Request("OPTIONS", path, {kAuth}));
    EXPECT_EQ(options.status, 204) << path;
    EXPECT_EQ(options.header("allow"), allow) << path;
  }
  // Another origin gets neither the header nor an answer.
  const HttpAnswer foreign = Exchange(port_, Request("GET", "/api/v1/models", {kAuth, other}));
  EXPECT_EQ(foreign.status, 403) << foreign.body;
  EXPECT_EQ(foreign.header("access-control-allow-origin"), "");
  const HttpAnswer foreign_preflight =
      Exchange(port_, Request("OPTIONS", "/api/v1/grid/stream", with(preflight, other)));
  EXPECT_EQ(foreign_preflight.status, 403);
  EXPECT_EQ(foreign_preflight.header("access-control-allow-origin"), "");
  // The page's own origin needs no header.
  const HttpAnswer own = Exchange(
      port_, Request("POST", "/api/v1/grid/stream", {kAuth, kJson, {"Origin", "http://127.0.0.1"}},
                     R"({"steps":0})"));
  EXPECT_EQ(own.status, 400) << own.body;
  EXPECT_EQ(own.header("access-control-allow-origin"), "");

  // By default: same-origin only.
  const HttpAnswer plain = Exchange(plain_port_, Request("GET", "/api/v1/models"));
  EXPECT_EQ(plain.status, 200) << plain.body;
  EXPECT_EQ(plain.header("access-control-allow-origin"), "");
  const HttpAnswer plain_cross =
      Exchange(plain_port_, Request("GET", "/api/v1/models", {{"Origin", kAllowedOrigin}}));
  EXPECT_EQ(plain_cross.status, 403) << plain_cross.body;
  EXPECT_EQ(plain_cross.header("access-control-allow-origin"), "");
  const HttpAnswer plain_preflight = Exchange(
      plain_port_, Request("OPTIONS", "/api/v1/grid", with(preflight, {"Origin", kAllowedOrigin})));
  EXPECT_EQ(plain_preflight.status, 403);
  EXPECT_EQ(plain_preflight.header("access-control-allow-origin"), "");
}

TEST_F(HttpGatewayTest, ControlBytesInPathsAreRefused) {
  const HttpAnswer page = Exchange(port_, Request("GET", "/index.html"));
  EXPECT_EQ(page.status, 200);
  EXPECT_EQ(page.header("content-type"), "text/html");
  EXPECT_NE(page.body.find("<title>grid</title>"), std::string::npos);
  for (const char* path : {"/index.html%00.png", "/index.html%00", "/index.html%0a.js",
                           "/api/v1/models%00"}) {
    const HttpAnswer answer = Exchange(port_, Request("GET", path, {kAuth}));
    EXPECT_EQ(answer.status, 400) << path << ": " << answer.body;
    EXPECT_NE(answer.header("content-type"), "image/png") << path;
    EXPECT_EQ(answer.body.find("<title>"), std::string::npos) << path;
    EXPECT_NE(answer.body.find("control bytes"), std::string::npos) << path << ": " << answer.body;
  }
}


// Slowloris: 300 sockets from one address, each sending a header line every
// second, once held every thread and left /healthz (the readiness probe) and
// the API unanswered for 30 s. Now that address gets 24 places; the rest are
// refused at once, without their requests being read.
TEST_F(HttpGatewayTest, SlowlorisFromOneAddressDoesNotDelayOthers) {
  std::vector<int> sockets;
  for (int i = 0; i < 300; ++i) {
    const int fd = Connect(port_, "127.0.0.7");
    if (fd < 0) break;
    SendAll(fd, "GET /api/v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    sockets.push_back(fd);
    if (i % 4 == 3) absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_EQ(sockets.size(), 300u);
  // Within the head timeout: the 16 held places stay held throughout.
  const absl::Time until = absl::Now() + absl::Seconds(kHeadTimeoutS - 1);
  int probes = 0;
  while (absl::Now() < until) {
    for (const int fd : sockets) SendAll(fd, "X-Slow: 1\r\n");
    const HttpAnswer health = Exchange(port_, Request("GET", "/healthz"), absl::Seconds(30));
    EXPECT_EQ(health.status, 200);
    EXPECT_LT(health.took, absl::Seconds(3)) << "took " << health.took;
    const HttpAnswer models =
        Exchange(port_, Request("GET", "/api/v1/models", {kAuth}), absl::Seconds(30));
    EXPECT_EQ(models.status, 200) << models.body;
    EXPECT_LT(models.took, absl::Seconds(3)) << "took " << models.took;
    ++probes;
    absl::SleepFor(absl::Milliseconds(500));
  }
  EXPECT_GE(probes, 3);
  // All but the address's places got their 503 and were closed.
  int refused = 0;
  for (const int fd : sockets) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 0) == 1) {
      const HttpAnswer answer = ReadAnswer(fd, absl::Seconds(1), absl::Now());
      if (answer.status == 503) {
        ++refused;
        EXPECT_NE(answer.body.find("from this address"), std::string::npos) << answer.body;
      }
    }
    ::close(fd);
  }
  EXPECT_EQ(refused, 300 - kConnectionsPerAddress);
}

// Every answer counts in dgrid_orchestrator_http_requests_total, by route
// and HTTP status: the gateway's own refusals too, which counted nowhere
// (a grid refused as bad JSON never reached grids_total).
TEST_F(HttpGatewayTest, AnswersAreCountedByRouteAndStatus) {
  auto count = [](const char* route, int code) {
    return std::max(0.0, stack_->Metric(-1, absl::StrCat("dgrid_orchestrator_http_requests_total{"
                                                         "code=\"", code, "\",route=\"", route,
                                                         "\"}")));
  };
  const double models = count("models", 200), health = count("health", 200),
               bad_json = count("grid", 400), unauthorized = count("models", 401),
               missing = count("api_other", 404), page = count("page", 200),
               late = count("connection", 408), overlong = count("connection", 414),
               malformed = count("connection", 400);
  EXPECT_EQ(Exchange(port_, Request("GET", "/api/v1/models", {kAuth})).status, 200);
  EXPECT_EQ(Exchange(port_, Request("GET", "/healthz")).status, 200);
  EXPECT_EQ(Exchange(port_, Request("POST", "/api/v1/grid",
                                    {kAuth, {"Content-Type", "application/json"}}, "{\"steps\":"))
                .status,
            400);
  EXPECT_EQ(Exchange(port_, Request("GET", "/api/v1/models")).status, 401);
  EXPECT_EQ(Exchange(port_, Request("GET", "/api/v1/nothing", {kAuth})).status, 404);
  EXPECT_EQ(Exchange(port_, Request("GET", "/")).status, 200);
  // A request line that never ends: answered before httplib read it.
  EXPECT_EQ(Exchange(port_, "GET /api/v1/mod", absl::Seconds(20)).status, 408);
  // A request line past httplib's 8 KiB, and one it cannot parse: not read
  // as a request either (they counted as route "page", an API path too).
  EXPECT_EQ(Exchange(port_, Request("GET", "/api/v1/models?x=" + std::string(9000, 'a'))).status,
            414);
  EXPECT_EQ(Exchange(port_, "NOT-A-REQUEST\r\n\r\n").status, 400);
  EXPECT_EQ(count("models", 200), models + 1);
  EXPECT_EQ(count("health", 200), health + 1);
  EXPECT_EQ(count("grid", 400), bad_json + 1);
  EXPECT_EQ(count("models", 401), unauthorized + 1);
  EXPECT_EQ(count("api_other", 404), missing + 1);
  EXPECT_EQ(count("page", 200), page + 1);
  EXPECT_EQ(count("connection", 408), late + 1);
  EXPECT_EQ(count("connection", 414), overlong + 1);
  EXPECT_EQ(count("connection", 400), malformed + 1);
}

// A head paced to stay under each read's timeout (a line a second) is cut
// off at the head's deadline (kHeadTimeoutS on this stack), with a 408 that
// says so.
TEST_F(HttpGatewayTest, AHeadSentSlowlyIsCutOff) {
  const int fd = Connect(port_, "127.0.0.8");
  ASSERT_GE(fd, 0);
  const absl::Time start = absl::Now();
  ASSERT_TRUE(SendAll(fd, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"));
  HttpAnswer answer;
  bool answered = false;
  while (!answered && absl::Now() - start < absl::Seconds(20)) {
    if (!SendAll(fd, "X-Slow: 1\r\n")) break;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 1000) == 1) {
      answer = ReadAnswer(fd, absl::Seconds(2), absl::Now());
      answered = true;
    }
  }
  const absl::Duration held = absl::Now() - start;
  ::close(fd);
  EXPECT_LT(held, absl::Seconds(kHeadTimeoutS + 3)) << "the server held the connection " << held;
  EXPECT_GT(held, absl::Seconds(kHeadTimeoutS - 2)) << held;
  EXPECT_EQ(answer.status, 408) << answer.body;
  EXPECT_NE(answer.body.find("request head: not received whole in time"), std::string::npos)
      << answer.body;
}

// A request line or a body that stops coming is answered 408, naming the
// part that was late (they used to read as malformed: a 400, or nothing),
// and the connection closes.
TEST_F(HttpGatewayTest, ARequestThatStopsComingIsAnswered408) {
  struct Case {
    const char* name;
    std::string sent;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"request line", "GET /api/v1/mod", "request head: not received whole in time"},
      {"body",
       absl::StrCat("POST /api/v1/grid HTTP/1.1\r\nHost: 127.0.0.1\r\n", kAuth.name, ": ",
                    kAuth.value,
                    "\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                    "{\"seed\":"),
       "request body: not received whole within 30 s"},
  };
  std::vector<int> sockets;
  for (const Case& c : cases) {
    const int fd = Connect(port_, "127.0.0.9");
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(SendAll(fd, c.sent));
    sockets.push_back(fd);
  }
  const absl::Time start = absl::Now();
  for (size_t i = 0; i < cases.size(); ++i) {
    const HttpAnswer answer = ReadAnswer(sockets[i], absl::Seconds(20), start);
    ::close(sockets[i]);
    EXPECT_EQ(answer.status, 408) << cases[i].name << ": " << answer.body;
    EXPECT_NE(answer.body.find(cases[i].message), std::string::npos)
        << cases[i].name << ": " << answer.body;
    EXPECT_LT(answer.took, absl::Seconds(15)) << cases[i].name << ": the connection stayed open";
  }
}

// A token is compared as sent: with the "%41" of kToken decoded it is
// another token.
TEST_F(HttpGatewayTest, ATokenIsReadAsSent) {
  EXPECT_EQ(Exchange(port_, Request("GET", "/api/v1/models", {kAuth})).status, 200);
  const std::string decoded = absl::StrReplaceAll(kAuth.value, {{"%41", "A"}});
  ASSERT_NE(decoded, kAuth.value);
  EXPECT_EQ(Exchange(port_, Request("GET", "/api/v1/models", {{"Authorization", decoded}})).status,
            401);
}

// A chunked body is read by RFC 9112's grammar: httplib took " 5d" and
// "0x5d" for sizes and any two bytes for the CRLF after a chunk's data, and
// refused a trailer section as a body it "cannot read". A length past any
// number is too large, not "not a number"; chunked is no HTTP/1.0 framing.
TEST_F(HttpGatewayTest, ChunkFramingOutsideTheGrammarIsRefused) {
  const std::string head = "POST /api/v1/grid HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           "Content-Type: application/json\r\nConnection: close\r\n";
  const std::string chunked = absl::StrCat(head, "Transfer-Encoding: chunked\r\n\r\n");
  const std::string size = absl::StrCat(absl::Hex(sizeof(kSmallGrid) - 1));
  struct Case {
    const char* name;
    std::string request;
    int status;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"a space before the size",
       absl::StrCat(chunked, " ", size, "\r\n", kSmallGrid, "\r\n0\r\n\r\n"), 400,
       "request body: a chunk size starts with"},
      {"0x before the size",
       absl::StrCat(chunked, "0x", size, "\r\n", kSmallGrid, "\r\n0\r\n\r\n"), 400,
       "after its hex digits"},
      {"no CRLF after the data",
       absl::StrCat(chunked, size, "\r\n", kSmallGrid, "XY0\r\n\r\n"), 400,
       "a chunk's data runs past its size"},
      {"a trailer",
       absl::StrCat(chunked, size, "\r\n", kSmallGrid, "\r\n0\r\nX-Trailer: 1\r\n\r\n"), 400,
       "a trailer section after the last chunk, which this server does not read"},
      {"chunked in HTTP/1.0",
       absl::StrCat(absl::StrReplaceAll(chunked, {{"HTTP/1.1", "HTTP/1.0"}}), size, "\r\n",
                    kSmallGrid, "\r\n0\r\n\r\n"),
       400, "Transfer-Encoding in an HTTP/1.0 request"},
      {"a length past any number",
       absl::StrCat(head, "Content-Length: 99999999999999999999999\r\n\r\n", kSmallGrid), 413,
       "request body: larger than the limit"},
  };
  for (const Case& c : cases) {
    const HttpAnswer answer = Exchange(plain_port_, c.request, absl::Seconds(20));
    EXPECT_EQ(answer.status, c.status) << c.name << ": " << answer.body.substr(0, 300);
    EXPECT_NE(answer.body.find(c.message), std::string::npos)
        << c.name << ": " << answer.body.substr(0, 300);
  }
  // Framed by the grammar, with an extension, it runs.
  const HttpAnswer framed = Exchange(
      plain_port_, absl::StrCat(chunked, size, ";x=1\r\n", kSmallGrid, "\r\n0\r\n\r\n"),
      absl::Seconds(60));
  EXPECT_EQ(framed.status, 200) << framed.body.substr(0, 300);
}

// "Expect: 100-continue": a request refused on its head alone is refused
// before its client sends the body (httplib said 100 Continue first, and
// the body came for nothing); one that passes is told to go on, and runs.
TEST_F(HttpGatewayTest, AnExpectedBodyIsRefusedBeforeItIsSent) {
  const std::string grid_head = absl::StrCat(
      "POST /api/v1/grid HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
      "Content-Length: ", sizeof(kSmallGrid) - 1, "\r\n");
  struct Case {
    const char* name;
    std::string head;
    int status;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"no token", absl::StrCat(grid_head, "Content-Type: application/json\r\n\r\n"), 401,
       "token"},
      {"another type",
       absl::StrCat(grid_head, kAuth.name, ": ", kAuth.value, "\r\nContent-Type: text/plain\r\n\r\n"),
       415, "must be application/json"},
      {"a body past the limit",
       absl::StrCat("POST /api/v1/grid HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n",
                    kAuth.name, ": ", kAuth.value,
                    "\r\nContent-Type: application/json\r\nContent-Length: 900000000\r\n\r\n"),
       413, "larger than the limit"},
  };
  for (const Case& c : cases) {
    // The head alone: the answer must come without the body.
    const HttpAnswer answer = Exchange(port_, c.head, absl::Seconds(10));
    EXPECT_EQ(answer.status, c.status) << c.name << ": " << answer.body.substr(0, 300);
    EXPECT_NE(answer.body.find(c.message), std::string::npos) << c.name << ": " << answer.body;
    EXPECT_EQ(answer.header("connection"), "close") << c.name;
  }
  // A request that passes: 100 Continue, then the grid once the body comes.
  const int fd = Connect(port_);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(SendAll(fd, absl::StrCat(grid_head, kAuth.name, ": ", kAuth.value,
                                       "\r\nContent-Type: application/json\r\n"
                                       "Connection: close\r\n\r\n")));
  std::string interim;
  char byte;
  while (!absl::EndsWith(interim, "\r\n\r\n") && interim.size() < 200 &&
         ::recv(fd, &byte, 1, 0) == 1) {
    interim += byte;
  }
  EXPECT_TRUE(absl::StartsWith(interim, "HTTP/1.1 100 Continue\r\n")) << interim;
  ASSERT_TRUE(SendAll(fd, kSmallGrid));
  const HttpAnswer grid = ReadAnswer(fd, absl::Seconds(60), absl::Now());
  ::close(fd);
  EXPECT_EQ(grid.status, 200) << grid.body.substr(0, 300);
  // An OPTIONS, answered without ending the connection: in routing, once
  // (its headers were not doubled).
  const HttpAnswer options = Exchange(
      port_, "OPTIONS /api/v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
             "Connection: close\r\n\r\n");
  EXPECT_EQ(options.status, 100);  // the interim answer first, then the 204
  EXPECT_NE(options.body.find("HTTP/1.1 204"), std::string::npos) << options.body;
  EXPECT_EQ(options.body.find("Allow: GET, HEAD, OPTIONS\r\nAllow:"), std::string::npos);
}

// An answer is compressed only in a coding the client accepts (httplib read
// "gzip;q=0" and "nobrotli" as accepting), and says it varies by that.
TEST_F(HttpGatewayTest, AnswersAreCompressedOnlyAsAccepted) {
  const std::pair<const char*, const char*> cases[] = {
      {"br;q=0, gzip", "gzip"}, {"gzip;q=0", ""}, {"nobrotli, x-gzip-not", ""},
      {"br", "br"},             {"identity", ""},
  };
  for (const auto& [accept, coding] : cases) {
    const HttpAnswer answer = Exchange(
        plain_port_, Request("GET", "/api/v1/models", {{"Accept-Encoding", accept}}));
    EXPECT_EQ(answer.status, 200) << accept;
    EXPECT_EQ(answer.header("content-encoding"), coding) << accept;
    EXPECT_EQ(answer.header("vary"), "Accept-Encoding") << accept;
  }
}

// Framing that a proxy in front might read otherwise (request smuggling).
TEST_F(HttpGatewayTest, AmbiguousFramingIsRefused) {
  const std::string head = "POST /api/v1/grid HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           "Content-Type: application/json\r\nConnection: close\r\n";
  const std::string chunked_grid =
      absl::StrCat(absl::Hex(sizeof(kSmallGrid) - 1), "\r\n", kSmallGrid, "\r\n0\r\n\r\n");
  struct Case {
    const char* name;
    std::string request;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"two lengths",
       absl::StrCat(head, "Content-Length: ", sizeof(kSmallGrid) - 1,
                    "\r\nContent-Length: 5\r\n\r\n", kSmallGrid),
       "two different lengths"},
      {"length and chunked",
       absl::StrCat(head, "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", chunked_grid),
       "Content-Length and Transfer-Encoding together"},
      {"another coding",
       absl::StrCat(head, "Transfer-Encoding: chunked, identity\r\n\r\n", chunked_grid),
       "only chunked"},
      {"signed length",
       absl::StrCat(head, "Content-Length: +", sizeof(kSmallGrid) - 1, "\r\n\r\n", kSmallGrid),
       "not a number"},
      // Header lines httplib read otherwise than the grammar says: a name
      // with space before its colon was another name, a line ending in a
      // bare LF or folded was dropped, a value was percent-decoded, and an
      // empty one dropped. Each framed the body its own way.
      {"space before the colon",
       absl::StrCat(head, "Content-Length : 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                    chunked_grid),
       "header line 4 (\\\"Content-Length \\\") has space before its colon"},
      {"a bare LF",
       absl::StrCat(head, "Transfer-Encoding: chunked\nContent-Length: ", sizeof(kSmallGrid) - 1,
                    "\r\n\r\n", kSmallGrid),
       "has a bare CR or LF"},
      {"a folded line",
       absl::StrCat(head, "Content-Length: ", sizeof(kSmallGrid) - 1, "\r\n 5\r\n\r\n",
                    kSmallGrid),
       "is folded onto the line before"},
      {"an encoded coding",
       absl::StrCat(head, "Transfer-Encoding: %63hunked\r\n\r\n", chunked_grid),
       "only chunked is supported, got \\\"%63hunked\\\""},
      {"an empty length",
       absl::StrCat(head, "Content-Length:\r\nTransfer-Encoding: chunked\r\n\r\n", chunked_grid),
       "Content-Length and Transfer-Encoding together"},
  };
  for (const Case& c : cases) {
    const HttpAnswer answer = Exchange(plain_port_, c.request, absl::Seconds(20));
    EXPECT_EQ(answer.status, 400) << c.name << ": " << answer.body.substr(0, 300);
    EXPECT_NE(answer.body.find(c.message), std::string::npos)
        << c.name << ": " << answer.body.substr(0, 300);
  }
  // 150 headers are too many (400); 20 of 5,000 bytes are past the head's
  // 64 KiB (431, which httplib's 400 once hid as "malformed").
  struct TooMuch {
    int headers;
    size_t value_bytes;
    int status;
    const char* message;
  };
  for (const TooMuch& c : {TooMuch{150, 1, 400, "more than 100 headers"},
                           TooMuch{20, 5000, 431, "more than 64 KiB of request line and headers"}}) {
    // No "Connection: close": the refusal says the connection ends.
    std::string request = "GET /api/v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    for (int i = 0; i < c.headers; ++i) {
      absl::StrAppend(&request, "X-Filler-", i, ": ", std::string(c.value_bytes, 'v'), "\r\n");
    }
    absl::StrAppend(&request, "\r\n");
    const int fd = Connect(plain_port_);
    ASSERT_GE(fd, 0);
    std::thread sender([fd, request] { SendAll(fd, request); });
    const HttpAnswer answer = ReadAnswer(fd, absl::Seconds(10), absl::Now());
    ::shutdown(fd, SHUT_RDWR);
    sender.join();
    ::close(fd);
    EXPECT_EQ(answer.status, c.status) << c.headers << " headers: " << answer.body.substr(0, 300);
    EXPECT_NE(answer.body.find(c.message), std::string::npos) << answer.body.substr(0, 300);
    EXPECT_EQ(answer.header("connection"), "close") << c.headers << " headers";
  }
  // A body read as a second request: one answer, the refusal.
  const HttpAnswer smuggled = Exchange(
      plain_port_,
      "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length : 45\r\n\r\n"
      "GET /api/v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
      absl::Seconds(20));
  EXPECT_EQ(smuggled.status, 400) << smuggled.body.substr(0, 300);
  EXPECT_EQ(smuggled.body.find("HTTP/1.1"), std::string::npos) << smuggled.body.substr(0, 600);
  // The same grid, framed once, runs.
  const HttpAnswer framed = Exchange(
      plain_port_, absl::StrCat(head, "Transfer-Encoding: chunked\r\n\r\n", chunked_grid),
      absl::Seconds(60));
  EXPECT_EQ(framed.status, 200) << framed.body.substr(0, 300);
}

// An <img src=".../api/v1/grid/stream?request=..."> on any page once
// started a grid (no Origin, no preflight); only a POST starts one now.
TEST_F(HttpGatewayTest, AGetStartsNoGrid) {
  const std::string query = "/api/v1/grid/stream?request=%7B%22seed%22%3A%221%22%7D";
  const HttpAnswer by_get = Exchange(plain_port_, Request("GET", query));
  EXPECT_EQ(by_get.status, 405) << by_get.body.substr(0, 300);
  EXPECT_EQ(by_get.header("allow"), "POST, OPTIONS");
  EXPECT_EQ(by_get.body.find("event:"), std::string::npos) << by_get.body.substr(0, 300);
  EXPECT_EQ(Exchange(plain_port_, Request("GET", "/api/v1/grid")).status, 405);
}

// A path the API does not have is a 404 naming the paths it has, whatever
// the method: a POST to /api/v1/curve is not told to try GET.
TEST_F(HttpGatewayTest, AnUnknownApiPathIsNotFound) {
  for (const char* method : {"POST", "GET"}) {
    for (const char* path : {"/api/v1/curve", "/api/v2/grid", "/api/v1/models/x"}) {
      const HttpAnswer answer =
          Exchange(plain_port_, Request(method, path, {kJson}, method[0] == 'P' ? "{}" : ""));
      EXPECT_EQ(answer.status, 404) << method << " " << path << ": " << answer.body;
      EXPECT_NE(answer.body.find("/api/v1/curve/stream"), std::string::npos) << answer.body;
      EXPECT_EQ(answer.header("allow"), "") << path;
    }
  }
}

// The refusals httplib makes itself (a request line it cannot parse, one
// past its 8 KiB or past the head's 64 KiB, a file the web folder lacks)
// carry a JSON error too; they had empty bodies, or none.
TEST_F(HttpGatewayTest, HttplibsOwnRefusalsCarryAJsonError) {
  struct Case {
    std::string request;
    int status;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"NOT-A-REQUEST\r\n\r\n", 400, "request line or a header is malformed"},
      {Request("GET", "/" + std::string(9000, 'a')), 414, "request line is too long"},
      // Past the head's 64 KiB: httplib gave no answer at all.
      {Request("GET", "/" + std::string(70000, 'a')), 414, "request line is longer than 64 KiB"},
      {Request("GET", "/no-such-page.html"), 404, "nothing is served here"},
  };
  for (const Case& c : cases) {
    const HttpAnswer answer = Exchange(port_, c.request);
    EXPECT_EQ(answer.status, c.status) << c.request.substr(0, 40) << ": " << answer.body;
    EXPECT_EQ(answer.header("content-type"), "application/json") << c.status;
    EXPECT_NE(answer.body.find(c.message), std::string::npos) << c.status << ": " << answer.body;
  }
}

// DNS rebinding: a page of rebind.example whose name now points here is
// same-origin to the browser (Host and Origin agree), so only the Host
// header gives it away.
TEST_F(HttpGatewayTest, ARequestForAnotherHostNameIsRefused) {
  const std::string rebound = absl::StrCat("rebind.example:", plain_port_);
  auto with_host = [](const std::string& host, std::string request) {
    return absl::StrReplaceAll(request, {{"Host: 127.0.0.1", "Host: " + host}});
  };
  const HttpAnswer stream =
      Exchange(plain_port_, with_host(rebound, Request("POST", "/api/v1/grid/stream",
                                                       {kJson, {"Origin", "http://" + rebound}},
                                                       kSmallGrid)));
  EXPECT_EQ(stream.status, 421) << stream.body.substr(0, 300);
  EXPECT_NE(stream.body.find("--http_allowed_hosts"), std::string::npos) << stream.body;
  EXPECT_EQ(stream.body.find("event:"), std::string::npos);
  EXPECT_EQ(Exchange(plain_port_, with_host(rebound, Request("GET", "/api/v1/models"))).status,
            421);
  // Health answers any name, for probes; addresses and localhost are fine.
  EXPECT_EQ(Exchange(plain_port_, with_host(rebound, Request("GET", "/healthz"))).status, 200);
  for (const std::string& host : {absl::StrCat("localhost:", plain_port_),
                                  absl::StrCat("127.0.0.1:", plain_port_), std::string("[::1]")}) {
    EXPECT_EQ(Exchange(plain_port_, with_host(host, Request("GET", "/api/v1/models"))).status, 200)
        << host;
  }
  // A name given by --http_allowed_hosts is served.
  const HttpAnswer named =
      Exchange(port_, with_host(absl::StrCat("grid.example:", port_),
                                Request("GET", "/api/v1/models", {kAuth})));
  EXPECT_EQ(named.status, 200) << named.body;
}

// A Host twice was judged by the first alone, "[::1]x.example" by what came
// before its "x", and an HTTP/1.1 request without one was served; an
// Authorization twice, by the first alone.
TEST_F(HttpGatewayTest, AHostTwiceMalformedOrMissingIsRefused) {
  const std::string models = Request("GET", "/api/v1/models");
  const std::pair<std::string, const char*> cases[] = {
      {absl::StrReplaceAll(models, {{"Host: 127.0.0.1\r\n",
                                     "Host: 127.0.0.1\r\nHost: rebind.example\r\n"}}),
       "Host: given 2 times"},
      {absl::StrReplaceAll(models, {{"Host: 127.0.0.1", "Host: [::1]x.rebind.example"}}),
       "Host: not host[:port]"},
      {absl::StrReplaceAll(models, {{"Host: 127.0.0.1", "Host: 127.0.0.1:80x"}}),
       "Host: not host[:port]"},
      {absl::StrReplaceAll(models, {{"Host: 127.0.0.1\r\n", ""}}),
       "Host: an HTTP/1.1 request carries one"},
      {absl::StrReplaceAll(models, {{"Host: 127.0.0.1", "Host: grid/../x"}}),
       "Host: not host[:port]"},
      // The token check read the first alone; a proxy may read the last.
      {absl::StrReplaceAll(models, {{"Host: 127.0.0.1\r\n",
                                     "Host: 127.0.0.1\r\nAuthorization: Bearer a\r\n"
                                     "Authorization: Bearer b\r\n"}}),
       "Authorization: given 2 times"},
  };
  for (const auto& [request, message] : cases) {
    const HttpAnswer answer = Exchange(plain_port_, request);
    EXPECT_EQ(answer.status, 400) << request << answer.body;
    EXPECT_NE(answer.body.find(message), std::string::npos) << answer.body;
  }
  // HTTP/1.0 needs none.
  EXPECT_EQ(Exchange(plain_port_, "GET /api/v1/models HTTP/1.0\r\n\r\n").status, 200);
  // An IPv6 address with its zone (RFC 6874), and a name RFC 3986 allows.
  for (const char* host : {"[fe80::1%25eth0]:8080", "[::1]", "grid.example.", "a~b.example"}) {
    const HttpAnswer answer = Exchange(
        plain_port_, absl::StrReplaceAll(Request("GET", "/healthz"), {{"127.0.0.1", host}}));
    EXPECT_EQ(answer.status, 200) << host << ": " << answer.body;
  }
}

// httplib answered each range of `Range: bytes=0-,0-,...` with the whole
// answer, built in memory: a 6 KB header made 100 MB. Ranges are ignored.
TEST_F(HttpGatewayTest, RangesAreIgnored) {
  std::string ranges = "bytes=0-";
  for (int i = 0; i < 500; ++i) ranges += ",0-";
  for (const std::string& path : {"/index.html", "/api/v1/models"}) {
    const HttpAnswer plain = Exchange(plain_port_, Request("GET", path));
    const HttpAnswer ranged = Exchange(plain_port_, Request("GET", path, {{"Range", ranges}}));
    EXPECT_EQ(plain.status, 200) << path;
    EXPECT_EQ(ranged.status, 200) << path << ": " << ranged.body.substr(0, 200);
    EXPECT_EQ(ranged.body, plain.body) << path;
    const HttpAnswer past = Exchange(plain_port_, Request("GET", path, {{"Range", "bytes=99999-"}}));
    EXPECT_EQ(past.status, 200) << path;
    EXPECT_EQ(past.body, plain.body) << path;
  }
  const HttpAnswer stream = Exchange(
      plain_port_, Request("POST", "/api/v1/grid/stream", {kJson, {"Range", "bytes=0-10"}},
                           kSmallGrid));
  EXPECT_EQ(stream.status, 200) << stream.body.substr(0, 200);
  EXPECT_NE(stream.body.find("event: grid"), std::string::npos);
  // HEAD, and a file's advertised ranges.
  const HttpAnswer head =
      Exchange(plain_port_, Request("HEAD", "/index.html", {{"Range", "bytes=0-5"}}));
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.header("accept-ranges"), "none");
  // A list httplib cannot parse whole is 416 before any route, and the
  // ranges it had read were applied to the error's body (a 7.8 KB header
  // made 504 KB): the error goes whole.
  const HttpAnswer bad = Exchange(
      plain_port_, Request("GET", "/index.html", {{"Range", ranges + ",9-1"}}));
  EXPECT_EQ(bad.status, 416);
  EXPECT_LT(bad.body.size(), 300u);
  EXPECT_TRUE(absl::StartsWith(bad.body, R"({"code":"INVALID_ARGUMENT","message":"Range: )"))
      << bad.body.substr(0, 300);
}

// httplib decodes a path before routing: "/api/v1/grid%2fstream" was the
// stream, past a proxy that filters paths as written.
TEST_F(HttpGatewayTest, AnEncodedSlashInAPathIsRefused) {
  for (const char* path : {"/api/v1/grid%2fstream", "/api/v1%2Fmodels", "/api/v1/models%5c"}) {
    const HttpAnswer answer = Exchange(plain_port_, Request("POST", path, {kJson}, kSmallGrid));
    EXPECT_EQ(answer.status, 400) << path << ": " << answer.body.substr(0, 200);
    EXPECT_NE(answer.body.find("encoded slash"), std::string::npos) << answer.body;
  }
  // Other escapes still decode, and a query may hold one.
  EXPECT_EQ(Exchange(plain_port_, Request("GET", "/api/v1/%6dodels")).status, 200);
  EXPECT_EQ(Exchange(plain_port_, Request("GET", "/api/v1/models?x=%2f")).status, 200);
}

// An HTTP/1.0 client reads no chunked coding: its stream comes unframed and
// ends when the connection does.
TEST_F(HttpGatewayTest, AnHttp10StreamIsNotChunked) {
  std::string request = Request("POST", "/api/v1/grid/stream", {kJson}, kSmallGrid);
  request = absl::StrReplaceAll(request, {{" HTTP/1.1\r\n", " HTTP/1.0\r\n"}});
  const HttpAnswer answer = Exchange(plain_port_, request);
  EXPECT_EQ(answer.status, 200) << answer.body.substr(0, 200);
  EXPECT_EQ(answer.header("transfer-encoding"), "");
  EXPECT_TRUE(absl::StartsWith(answer.body, "event: plan\ndata: {")) << answer.body.substr(0, 80);
  EXPECT_TRUE(absl::EndsWith(answer.body, "}\n\n")) << answer.body.substr(answer.body.size() - 80);
  EXPECT_NE(answer.body.find("event: grid"), std::string::npos);
}

// A coding httplib cannot read was "request body: cannot be read" (400),
// and "GZIP", which it passes on undecoded, "not valid JSON". Errors keep
// their keys in one order.
TEST_F(HttpGatewayTest, AnUnreadableContentEncodingIs415) {
  const HttpAnswer answer = Exchange(
      plain_port_,
      Request("POST", "/api/v1/grid", {kJson, {"Content-Encoding", "compress"}}, kSmallGrid));
  EXPECT_EQ(answer.status, 415) << answer.body;
  EXPECT_EQ(answer.body,
            R"({"code":"INVALID_ARGUMENT","message":"Content-Encoding must be one of gzip, )"
            R"(deflate, br or identity, in lower case, got \"compress\""})");
  const HttpAnswer upper = Exchange(
      plain_port_,
      Request("POST", "/api/v1/grid", {kJson, {"Content-Encoding", "GZIP"}}, kSmallGrid));
  EXPECT_EQ(upper.status, 415) << upper.body;
  // None, said so.
  const HttpAnswer identity = Exchange(
      plain_port_,
      Request("POST", "/api/v1/grid", {kJson, {"Content-Encoding", "identity"}}, kSmallGrid));
  EXPECT_EQ(identity.status, 200) << identity.body.substr(0, 300);
}

// A stack whose denoiser takes 300 ms a step, so that a large grid runs for
// a minute, and whose orchestrator runs two grids at a time, one per client.
class SlowGridTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    testing::StackOptions options;
    options.denoisers = 1;
    options.denoiser_flags = {"--debug_step_delay_ms=300"};
    options.orchestrator_flags = {"--http_addr=127.0.0.1:0", "--web_dir=",
                                  "--max_grids_per_client=1", "--max_concurrent_grids=2"};
    auto stack = Stack::Start(options, "http-gateway-slow");
    ASSERT_TRUE(stack.ok()) << stack.status();
    stack_ = stack->release();
    port_ = stack_->orchestrator_http_port();
    ASSERT_TRUE(WaitUntilServing(port_, {}));
  }
  static void TearDownTestSuite() { delete stack_; }

  // Polls `done` until it holds or `timeout` passes.
  static bool WaitFor(const std::function<bool()>& done, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      if (done()) return true;
      absl::SleepFor(absl::Milliseconds(100));
    }
    return done();
  }
  static double Jobs() {
    return stack_->Metric(-1, absl::StrCat("dgrid_orchestrator_replica_inflight{replica=\"",
                                           stack_->denoiser_address(0), "\"}"));
  }
  static double Cancelled() {
    return stack_->Metric(-1, "dgrid_orchestrator_grids_total{status=\"cancelled\"}");
  }
  // A gRPC stream of the large grid from this client, once admitted (its
  // first event read). The client's place may take a moment to come free
  // from its previous grid.
  struct GrpcGrid {
    grpc::ClientContext context;
    std::unique_ptr<grpc::ClientReader<v1::GridEvent>> reader;
  };
  static std::unique_ptr<GrpcGrid> StartGrpcGrid(v1::Orchestrator::Stub& stub) {
    v1::GridRequest request;
    request.set_seed(7);
    request.mutable_steps()->set_value(50);
    request.mutable_branches()->set_value(8);
    for (int k : {0, 5, 10, 15, 20, 25, 30, 35}) request.add_branch_steps(k);
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (true) {
      auto grid = std::make_unique<GrpcGrid>();
      grid->context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
      grid->reader = stub.StreamGrid(&grid->context, request);
      v1::GridEvent first;
      if (grid->reader->Read(&first)) return grid;
      const grpc::Status status = grid->reader->Finish();
      if (status.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED || absl::Now() > deadline) {
        ADD_FAILURE() << "gRPC grid refused: " << status.error_message();
        return nullptr;
      }
      absl::SleepFor(absl::Milliseconds(100));
    }
  }
  static void Stop(std::unique_ptr<GrpcGrid> grid) {
    grid->context.TryCancel();
    grid->reader->Finish();
  }

  static Stack* stack_;
  static int port_;
};

Stack* SlowGridTest::stack_ = nullptr;
int SlowGridTest::port_ = 0;

// A 50-step grid of 8 branches: about a minute here.
constexpr char kLargeGrid[] =
    R"({"seed":"7","steps":50,"branches":8,"branch_steps":[0,5,10,15,20,25,30,35]})";

// The per-client limit (1 here) once counted gRPC and HTTP apart: one
// address had 16 grids over each.
TEST_F(SlowGridTest, OneBudgetPerClientAcrossGrpcAndHttp) {
  auto stub = stack_->Orchestrator();
  auto grid = StartGrpcGrid(*stub);
  ASSERT_NE(grid, nullptr);
  const HttpAnswer http =
      Exchange(port_, Request("POST", "/api/v1/grid", {kJson}, kSmallGrid), absl::Seconds(60));
  EXPECT_EQ(http.status, 429) << http.body.substr(0, 300);
  EXPECT_NE(http.body.find("from this client"), std::string::npos) << http.body.substr(0, 300);
  EXPECT_LT(http.took, absl::Seconds(4)) << http.took;
  EXPECT_EQ(http.header("retry-after"), "1");
  // A third client's stream takes the second place (its plan is out).
  const int held = Connect(port_, "127.0.0.3");
  ASSERT_GE(held, 0);
  ASSERT_TRUE(SendAll(held, Request("POST", "/api/v1/grid/stream", {kJson}, kLargeGrid)));
  std::string start;
  char buffer[4096];
  timeval tv = absl::ToTimeval(absl::Seconds(30));
  ::setsockopt(held, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  while (start.find("event: plan") == std::string::npos) {
    const ssize_t n = ::recv(held, buffer, sizeof(buffer), 0);
    if (n <= 0) break;
    start.append(buffer, n);
  }
  ASSERT_NE(start.find("event: plan"), std::string::npos) << start.substr(0, 300);
  // Another client finds the service full: the server is busy, not the
  // client too demanding, so 503 (429 before), and either may come back.
  // So does the first client, though at its own limit too: a full service
  // is an overload, which the alerts count ("throttled" they leave out).
  for (const char* source : {"127.0.0.2", "127.0.0.1"}) {
    const HttpAnswer other = Exchange(port_, Request("POST", "/api/v1/grid", {kJson}, kSmallGrid),
                                      absl::Seconds(60), source);
    EXPECT_EQ(other.status, 503) << source << ": " << other.body.substr(0, 300);
    EXPECT_NE(other.body.find("too many grids in flight (limit 2)"), std::string::npos)
        << other.body.substr(0, 300);
    EXPECT_EQ(other.header("retry-after"), "1");
  }
  ::close(held);
  Stop(std::move(grid));
}

// A non-streaming grid used to run to its end after its client had gone
// (9,243 model evaluations for a maximum grid).
TEST_F(SlowGridTest, AGridWhoseClientHangsUpStops) {
  // The last test's grids, cancelled as it ended, are gone first: their
  // jobs and count would pass for this grid's.
  ASSERT_TRUE(WaitFor([] { return Jobs() == 0; }, absl::Seconds(15)));
  const double cancelled_before = std::max(Cancelled(), 0.0);
  const int fd = Connect(port_);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(SendAll(fd, Request("POST", "/api/v1/grid", {kJson}, kLargeGrid)));
  ASSERT_TRUE(WaitFor([] { return Jobs() > 0; }, absl::Seconds(20))) << "the grid never ran";
  ::close(fd);
  const absl::Time gone = absl::Now();
  EXPECT_TRUE(WaitFor([&] { return Cancelled() > cancelled_before && Jobs() == 0; },
                      absl::Seconds(15)))
      << "the grid ran on after its client hung up";
  std::cout << "grid stopped " << absl::Now() - gone << " after its client hung up\n";
  // The client's one place is free again.
  auto stub = stack_->Orchestrator();
  if (auto grid = StartGrpcGrid(*stub)) Stop(std::move(grid));
}

// A grid cut short by its client's own deadline counts as cancelled, and so
// do its jobs: the first job to meet the deadline counted as failed, on the
// dashboard's failed-jobs line (the grid and its other jobs as cancelled).
TEST_F(SlowGridTest, JobsCutShortByTheClientsDeadlineAreCancelled) {
  auto jobs = [](const char* status) {
    return std::max(
        0.0, stack_->Metric(-1, absl::StrCat("dgrid_orchestrator_jobs_total{status=\"", status,
                                             "\"}")));
  };
  // The client's place may take a moment to come free from the last test's grid.
  ASSERT_TRUE(WaitFor([] { return Jobs() == 0; }, absl::Seconds(15)));
  const double failed = jobs("failed"), cancelled = jobs("cancelled");
  auto stub = stack_->Orchestrator();
  v1::GridRequest request;
  request.set_seed(11);
  request.mutable_steps()->set_value(50);
  request.mutable_branches()->set_value(2);
  request.add_branch_steps(0);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
  auto reader = stub->StreamGrid(&context, request);
  v1::GridEvent event;
  while (reader->Read(&event)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  ASSERT_TRUE(WaitFor([&] { return Jobs() == 0 && jobs("cancelled") > cancelled; },
                      absl::Seconds(15)));
  EXPECT_EQ(jobs("failed"), failed);
}

// With every replica gone the gateway answers 503 with Retry-After, as for a
// full service: a replica comes back, or another is scheduled.
TEST(HttpNoReplicaTest, NoHealthyReplicaIs503WithRetryAfter) {
  testing::StackOptions options;
  options.denoisers = 1;
  options.orchestrator_flags = {"--http_addr=127.0.0.1:0", "--web_dir="};
  auto stack = Stack::Start(options, "http-no-replica");
  ASSERT_TRUE(stack.ok()) << stack.status();
  const int port = (*stack)->orchestrator_http_port();
  ASSERT_TRUE(WaitUntilServing(port, {}));
  const HttpAnswer warm =
      Exchange(port, Request("POST", "/api/v1/grid", {kJson}, kSmallGrid), absl::Seconds(60));
  ASSERT_EQ(warm.status, 200) << warm.body.substr(0, 300);
  EXPECT_EQ(warm.header("retry-after"), "");
  (*stack)->KillDenoiser(0);
  // Another seed: the first grid's cells are cached.
  const HttpAnswer down = Exchange(
      port,
      Request("POST", "/api/v1/grid", {kJson},
              R"({"seed":"2","steps":10,"branches":2,"branch_steps":[0,5]})"),
      absl::Seconds(60));
  EXPECT_EQ(down.status, 503) << down.body.substr(0, 300);
  EXPECT_NE(down.body.find("\"UNAVAILABLE\""), std::string::npos) << down.body.substr(0, 300);
  EXPECT_NE(down.body.find("no healthy denoiser replica"), std::string::npos)
      << down.body.substr(0, 300);
  EXPECT_EQ(down.header("retry-after"), "1");
}

// SIGTERM gives running grids the shutdown's grace (--shutdown_grace_s, 5 s
// by default, 3 here) over HTTP as over gRPC. The gateway once waited for
// every stream to finish, a minute here and up to the grid timeout, past
// Kubernetes' 30 s before SIGKILL; gRPC streams ended with a bare
// "Cancelling all calls".
TEST(HttpShutdownTest, RunningStreamsEndWithinTheGrace) {
  testing::StackOptions options;
  options.denoisers = 1;
  options.denoiser_flags = {"--debug_step_delay_ms=300"};
  options.orchestrator_flags = {"--http_addr=127.0.0.1:0", "--web_dir=", "--shutdown_grace_s=3"};
  auto stack = Stack::Start(options, "http-shutdown");
  ASSERT_TRUE(stack.ok()) << stack.status();
  const int port = (*stack)->orchestrator_http_port();
  ASSERT_TRUE(WaitUntilServing(port, {}));
  const int fd = Connect(port);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(SendAll(fd, Request("POST", "/api/v1/grid/stream", {kJson}, kLargeGrid)));
  // The stream has begun: its plan is out.
  std::string seen;
  char buffer[4096];
  const absl::Time begun = absl::Now() + absl::Seconds(20);
  while (seen.find("event: plan") == std::string::npos && absl::Now() < begun) {
    timeval tv = absl::ToTimeval(absl::Seconds(1));
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    const ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
    if (n > 0) seen.append(buffer, n);
  }
  ASSERT_NE(seen.find("event: plan"), std::string::npos) << seen.substr(0, 300);
  // And a gRPC stream.
  auto stub = (*stack)->Orchestrator();
  grpc::ClientContext grpc_context;
  grpc_context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
  v1::GridRequest grpc_request;
  grpc_request.set_seed(8);
  grpc_request.mutable_steps()->set_value(50);
  grpc_request.mutable_branches()->set_value(8);
  auto grpc_reader = stub->StreamGrid(&grpc_context, grpc_request);
  v1::GridEvent grpc_event;
  ASSERT_TRUE(grpc_reader->Read(&grpc_event));
  // Another client sends its body a byte a second: the gateway waits for it
  // no longer than the grace either (30 s, the body's own timeout, before).
  const int slow = Connect(port);
  ASSERT_GE(slow, 0);
  ASSERT_TRUE(SendAll(slow, "POST /api/v1/grid HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"));
  std::thread trickle([slow] {
    for (int i = 0; i < 40 && SendAll(slow, " "); ++i) absl::SleepFor(absl::Seconds(1));
  });
  absl::Cleanup stop_trickle = [&] {
    ::shutdown(slow, SHUT_RDWR);
    trickle.join();
    ::close(slow);
  };
  absl::SleepFor(absl::Milliseconds(200));
  const absl::Time stop = absl::Now();
  (*stack)->orchestrator().Signal(SIGTERM);
  absl::StatusOr<int> code = (*stack)->orchestrator().Wait(absl::Seconds(30));
  const absl::Duration took = absl::Now() - stop;
  ASSERT_TRUE(code.ok()) << "still running after SIGTERM";
  EXPECT_EQ(*code, 0) << (*stack)->orchestrator().Log();
  EXPECT_LT(took, absl::Seconds(10)) << took;  // 3 s, and 23.7 s before the grace
  std::cout << "orchestrator stopped " << took << " after SIGTERM with two grids streaming\n";
  while (grpc_reader->Read(&grpc_event)) {
  }
  const grpc::Status grpc_status = grpc_reader->Finish();
  EXPECT_EQ(grpc_status.error_code(), grpc::StatusCode::UNAVAILABLE) << grpc_status.error_message();
  EXPECT_NE(grpc_status.error_message().find("the server is shutting down"), std::string::npos)
      << grpc_status.error_message();
  // The stream's last event says why, as a reason to run it again.
  while (true) {
    const ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0) break;
    seen.append(buffer, n);
  }
  ::close(fd);
  const size_t error = seen.rfind("event: error");
  ASSERT_NE(error, std::string::npos) << seen.substr(seen.size() - std::min<size_t>(seen.size(), 300));
  EXPECT_NE(seen.find("\"UNAVAILABLE\"", error), std::string::npos) << seen.substr(error);
  EXPECT_NE(seen.find("the server is shutting down", error), std::string::npos) << seen.substr(error);
}

}  // namespace
}  // namespace dgrid
