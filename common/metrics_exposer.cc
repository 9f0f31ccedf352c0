#include "common/metrics_exposer.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <functional>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/client_key.h"
#include "common/connections_per_client.h"
#include "common/host_port.h"
#include "common/http_listen.h"
#include "httplib.h"

namespace dgrid {
namespace {

// httplib 0.11 bounds each read from a client but not a request: a client
// that sent a byte every few seconds held a thread for ever, and eight of
// them (httplib's pool) took /metrics down, which the replica-down alert
// and the autoscaler read. So the endpoint reads each request itself, whole
// within kHeadTimeout (a scraper sends its request at once), answers within
// kWriteTimeout and closes; one address (an IPv6 /64) holds at most
// kConnectionsPerAddress at a time, so that it cannot keep threads busy by
// reconnecting; and kThreads serve, so that it takes kThreads /
// kConnectionsPerAddress addresses trickling at once to make a scrape wait
// (up to kHeadTimeout a turn).
constexpr absl::Duration kHeadTimeout = absl::Seconds(1);
constexpr absl::Duration kWriteTimeout = absl::Seconds(10);
constexpr size_t kMaxHeadBytes = 8 << 10;
constexpr size_t kConnectionsPerAddress = 2;
constexpr size_t kThreads = 32;

// Waits for `events` on `fd` until `deadline`; false past it or on error.
bool WaitFor(int fd, short events, absl::Time deadline) {
  while (true) {
    const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (ms <= 0) return false;
    pollfd p{fd, events, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(ms));
    if (ready > 0) return true;
    if (ready < 0 && errno != EINTR) return false;
  }
}

// The request's head (up to its blank line), or empty when it does not come
// whole in time.
std::string ReadHead(int fd, absl::Time deadline) {
  std::string head;
  char buffer[1024];
  while (head.find("\r\n\r\n") == std::string::npos && head.size() < kMaxHeadBytes) {
    if (!WaitFor(fd, POLLIN, deadline)) return "";
    const ssize_t n = ::recv(fd, buffer, sizeof(buffer), MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return "";
    if (n > 0) head.append(buffer, static_cast<size_t>(n));
  }
  return head.find("\r\n\r\n") == std::string::npos ? "" : head;
}

void WriteAll(int fd, const std::string& bytes, absl::Time deadline) {
  for (size_t sent = 0; sent < bytes.size();) {
    if (!WaitFor(fd, POLLOUT, deadline)) return;
    const ssize_t n =
        ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno != EAGAIN && errno != EINTR) return;
    if (n > 0) sent += static_cast<size_t>(n);
  }
}

// The client the peer is (ClientKey: an IPv6 address's /64, since a host
// picks any address in its prefix and a cap per address would not hold it).
std::string PeerClient(int fd) {
  sockaddr_storage address{};
  socklen_t size = sizeof(address);
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&address), &size) != 0) return "";
  char text[INET6_ADDRSTRLEN] = {};
  const bool v6 = address.ss_family == AF_INET6;
  const void* ip =
      v6 ? static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(&address)->sin6_addr)
         : static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(&address)->sin_addr);
  return ::inet_ntop(v6 ? AF_INET6 : AF_INET, ip, text, sizeof(text)) ? ClientKey(text) : "";
}

// httplib's listening and accepting, with each connection served here: one
// request, GET or HEAD /metrics, then close.
class MetricsServer final : public httplib::Server {
 public:
  MetricsServer(std::function<std::string()> serialize, std::function<bool()> ready)
      : serialize_(std::move(serialize)), ready_(std::move(ready)) {
    new_task_queue = [] { return new httplib::ThreadPool(kThreads); };
  }

 private:
  bool process_and_close_socket(socket_t fd) override {
    const std::string peer = PeerClient(fd);
    // A stopping server's queue is closed at once, not served a turn each.
    if (is_running() && open_.Take(peer)) {
      Serve(fd);
      open_.Release(peer);
    }
    ::shutdown(fd, SHUT_RDWR);
    ::close(fd);
    return true;
  }

  void Serve(int fd) {
    const std::string head = ReadHead(fd, absl::Now() + kHeadTimeout);
    if (head.empty()) return;
    const absl::string_view line = absl::string_view(head).substr(0, head.find("\r\n"));
    const bool get = absl::StartsWith(line, "GET "), head_only = absl::StartsWith(line, "HEAD ");
    const absl::string_view target = line.substr(line.find(' ') + 1);
    const absl::string_view path = target.substr(0, target.find_first_of("? "));
    std::string answer;
    const bool health = ready_ && path == "/healthz";
    if (path != "/metrics" && !health) {
      answer = RawAnswer(404, "Not Found", "text/plain",
                         ready_ ? "metrics are at /metrics, health at /healthz\n"
                                : "metrics are at /metrics\n",
                         "", !head_only);
    } else if (!get && !head_only) {
      answer = RawAnswer(405, "Method Not Allowed", "text/plain",
                         health ? "GET /healthz\n" : "GET /metrics\n", "Allow: GET, HEAD\r\n");
    } else if (health) {
      // Plain HTTP for a server whose gRPC port speaks TLS, which kubelet's
      // gRPC probes cannot.
      answer = ready_() ? RawAnswer(200, "OK", "text/plain", "ok\n", "", !head_only)
                        : RawAnswer(503, "Service Unavailable", "text/plain", "not serving\n",
                                    "", !head_only);
    } else {
      answer = RawAnswer(200, "OK", "text/plain; version=0.0.4; charset=utf-8", serialize_(), "",
                         !head_only);
    }
    WriteAll(fd, answer, absl::Now() + kWriteTimeout);
  }

  const std::function<std::string()> serialize_;
  const std::function<bool()> ready_;  // null: no /healthz
  ConnectionsPerClient open_{kConnectionsPerAddress};
};

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Start(
    const std::string& address, std::shared_ptr<prometheus::Registry> registry,
    std::function<bool()> ready) {
  absl::StatusOr<HostPort> at = ParseHostPort("--metrics_addr", address);
  if (!at.ok()) return at.status();
  const std::string host = at->host.empty() ? "0.0.0.0" : at->host;
  const int port = at->port;

  auto endpoint = std::unique_ptr<MetricsEndpoint>(new MetricsEndpoint());
  endpoint->registry_ = std::move(registry);
  prometheus::Registry* r = endpoint->registry_.get();
  endpoint->server_ = std::make_unique<MetricsServer>(
      [r] { return prometheus::TextSerializer().Serialize(r->Collect()); }, std::move(ready));
  ListenAlone(*endpoint->server_);
  endpoint->port_ = BindHttp(*endpoint->server_, host, port);
  if (endpoint->port_ <= 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen for metrics on ", address, " (in use by another process?)"));
  }
  httplib::Server* server = endpoint->server_.get();
  endpoint->thread_ = std::thread([server] { server->listen_after_bind(); });
  WaitUntilListening(*server);
  return endpoint;
}

MetricsEndpoint::~MetricsEndpoint() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace dgrid
