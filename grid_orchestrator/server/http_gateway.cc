#include "grid_orchestrator/server/http_gateway.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <optional>
#include <set>
#include <type_traits>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/client_key.h"
#include "common/connections_per_client.h"
#include "common/host_port.h"
#include "common/http_listen.h"
#include "common/short_text.h"
#include "common/status_macros.h"
#include "grid_orchestrator/metrics/orchestrator_metrics.h"
#include "grid_orchestrator/server/cors_policy.h"
#include "grid_orchestrator/server/json_shape.h"
#include "grid_orchestrator/server/request_head.h"
#include "httplib.h"

namespace dgrid {
namespace {

using HandlerResponse = httplib::Server::HandlerResponse;

constexpr char kHealthPath[] = "/healthz";
constexpr char kApiPrefix[] = "/api/";
constexpr char kGridPath[] = "/api/v1/grid";
constexpr char kStreamPath[] = "/api/v1/grid/stream";
constexpr char kCurveStreamPath[] = "/api/v1/curve/stream";
constexpr char kModelsPath[] = "/api/v1/models";

// A read from a client waits at most this long for bytes, and a connection
// stays open at most this long with no request, so that an idle or stalled
// client gives its thread back soon. (A request has its own deadlines: see
// ServeConnection.)
constexpr absl::Duration kReadTimeout = absl::Seconds(5);
constexpr absl::Duration kIdleTimeout = absl::Seconds(5);
// A request's body must arrive within this of its head (ServeConnection).
constexpr absl::Duration kBodyTimeout = absl::Seconds(30);
constexpr size_t kRequestsPerConnection = 100;
// Past kSlowWriteGrace, an answer must have gone out at least this fast on
// average: a client reading a few bytes at a time would else hold a thread
// and the answer (a whole grid's JSON) for as long as it liked. Slow enough
// for any usable link (128 kbit/s).
constexpr absl::Duration kSlowWriteGrace = absl::Seconds(60);
constexpr double kMinWriteBytesPerSecond = 16 << 10;
// Headers a request may carry, past the 4 that httplib adds itself
// (REMOTE_ADDR...).
constexpr size_t kMaxHeaders = 100;
constexpr size_t kHeadersAddedByHttplib = 4;

// ---- Errors ----

// RESOURCE_EXHAUSTED is the client's own limit (429 Too Many Requests:
// ThrottledError) or the service's, or its replicas' (503: the server is
// busy, not the client too demanding).
int HttpStatusFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kResourceExhausted:
      return IsThrottled(status) ? 429 : 503;
    case absl::StatusCode::kCancelled:
      return 499;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

std::string ToJson(const google::protobuf::Message& message) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  google::protobuf::util::MessageToJsonString(message, &json, options);
  return json;
}

// `text` as a JSON string, escaped by protobuf's JSON mapping rather than by
// hand.
std::string JsonString(std::string text) {
  google::protobuf::Value value;
  value.set_string_value(std::move(text));
  return ToJson(value);
}

// {"code":"INVALID_ARGUMENT","message":"..."}: always in this order (a
// google.protobuf.Struct prints its keys in its map's order, which varied
// from one answer to the next).
std::string ErrorJson(const absl::Status& status) {
  return absl::StrCat(
      "{\"code\":", JsonString(std::string(absl::StatusCodeToString(status.code()))),
      ",\"message\":", JsonString(std::string(status.message())), "}");
}

void SendError(httplib::Response& response, int http_status, const absl::Status& status) {
  response.status = http_status;
  response.set_content(ErrorJson(status), "application/json");
}

void SendError(httplib::Response& response, const absl::Status& status) {
  const int http_status = HttpStatusFor(status);
  // A limit frees up as grids end, and a busy or restarting replica comes
  // back: the client may try again shortly.
  if (status.code() == absl::StatusCode::kResourceExhausted ||
      status.code() == absl::StatusCode::kUnavailable) {
    response.set_header("Retry-After", "1");
  }
  // The scheme the API takes (RFC 9110, 11.6.1).
  if (http_status == 401) response.set_header("WWW-Authenticate", "Bearer");
  SendError(response, http_status, status);
}

void CloseAfterAnswer();
// Whether the request being answered never had its head read whole (httplib
// refused it); then whether the head ran past kMaxHeadBytes; whether a read
// of it gave up waiting for the client.
bool HeadUnread();
bool HeadPastLimit();
bool RequestLate();

// A request whose head or body did not arrive in time (408).
absl::Status LateRequest(bool head) {
  const int64_t between = absl::ToInt64Seconds(kReadTimeout);
  return absl::DeadlineExceededError(
      head ? absl::StrCat("request head: not received whole in time (the orchestrator's "
                          "--http_head_timeout_s, at most ",
                          between, " s between bytes); send each request whole")
           : absl::StrCat("request body: not received whole within ",
                          absl::ToInt64Seconds(kBodyTimeout), " s of its head (at most ", between,
                          " s between bytes); send each request whole"));
}

// Answers, then closes the connection: for answers that may leave a request
// body unread, whose bytes must not be read as the next request (httplib
// would buffer a 100 MiB body as one "request line", and a HEAD request's
// body would be served as a request of its own).
void SendAndClose(httplib::Response& response, int http_status, std::string body,
                  const char* content_type) {
  response.status = http_status;
  response.set_header("Connection", "close");
  response.set_content(std::move(body), content_type);
  CloseAfterAnswer();
}

void RefuseAndClose(httplib::Response& response, int http_status, const absl::Status& status) {
  SendAndClose(response, http_status, ErrorJson(status), "application/json");
}

// The most a request's head (its request line and headers) may hold.
constexpr size_t kMaxHeadBytes = 64 << 10;

// Ranges are not served (RFC 9110, 14.2, lets a server ignore them):
// httplib answered `Range: bytes=0-,0-,...` with the whole answer once per
// range, built in memory (a 6 KB header made 100 MB of a 6 KB file, and a
// grid's JSON grew as much), on a POST too. httplib hands its handlers its
// own request, as const; the ranges are read only when the answer is
// written. Dropped before routing, and again in the error handler: a header
// httplib cannot parse whole (`0-,0-,...,9-1`) is answered 416 without
// routing, with the ranges it had parsed applied to the error's body.
void DropRanges(const httplib::Request& request) {
  const_cast<httplib::Request&>(request).ranges.clear();
}

// httplib's own refusals come with an empty body: a request line or header
// it cannot parse (400), a head past kMaxHeadBytes (400 from httplib, 431
// here), a URI past its 8 KiB (414), a file the web folder lacks (404). They
// get the JSON error every other refusal has.
HandlerResponse FillEmptyError(const httplib::Request& request, httplib::Response& response) {
  DropRanges(request);
  if (!response.body.empty() || response.content_length_ != 0) {
    return HandlerResponse::Unhandled;
  }
  absl::Status status;
  if (response.status == 400 && HeadPastLimit()) response.status = 431;
  // httplib reads a late head or body as a malformed one.
  const bool late = response.status == 400 && RequestLate();
  if (late) response.status = 408;
  switch (response.status) {
    case 400:
      status = absl::InvalidArgumentError(
          "request: its request line or a header is malformed (or a header line is past 8 KiB)");
      break;
    case 431:
      status = absl::InvalidArgumentError(absl::StrCat(
          "request head: more than ", kMaxHeadBytes >> 10, " KiB of request line and headers"));
      break;
    case 404:
      status = absl::NotFoundError("path: nothing is served here");
      break;
    case 408:
      status = LateRequest(HeadUnread());
      break;
    case 413:
      status = absl::ResourceExhaustedError("request body: too large");
      break;
    case 414:
      status = absl::InvalidArgumentError("path: the request line is too long");
      break;
    case 416:  // a Range header httplib cannot parse (any other is ignored)
      status = absl::InvalidArgumentError(
          "Range: not a list of byte ranges this server can read; ranges are not served, so "
          "ask without it");
      break;
    default:
      status = absl::UnknownError(absl::StrCat("HTTP status ", response.status));
  }
  if (HeadUnread() || late) {
    // Where the next request would start is unknown: the connection ends.
    SendAndClose(response, response.status, ErrorJson(status), "application/json");
  } else {
    response.set_content(ErrorJson(status), "application/json");
  }
  return HandlerResponse::Handled;
}

// ---- Connections ----

// httplib 0.11 bounds each read from a client but not a request: a client
// that sends a header line every few seconds holds its connection, and the
// thread that serves it, for ever (slowloris). So the gateway serves each
// connection itself (ServeConnection) and calls httplib once per request.
// A request's head must arrive whole within the head timeout
// (HttpGatewayOptions::head_timeout) of the connection's opening or of the
// previous answer, and its body within kBodyTimeout of its head; the head
// holds at most kMaxHeadBytes.
// Past a cap, how long a connection has to show that it is a health check.
// A probe sends its request at once.
constexpr absl::Duration kRefusalWait = absl::Milliseconds(250);
// The same with other refusals queued behind (a flood): they have waited
// in the queue already. Too short for a TLS handshake, so such a TLS
// connection closes unanswered.
constexpr absl::Duration kHurriedRefusalWait = absl::Milliseconds(10);

// Set on the threads that take connections past max_connections, to how
// long their refusal waits for the request: kRefusalWait, or
// kHurriedRefusalWait while other refusals queue behind it.
thread_local std::optional<absl::Duration> t_over_capacity;

class ClientConnection;
// The connection whose requests this thread serves: httplib runs a
// request's handlers on the thread that read it.
thread_local ClientConnection* t_connection = nullptr;

// One client's connection as httplib reads and writes it, with the bounds
// httplib lacks: a deadline on each request besides each read's timeout, a
// cap on the head's size, and a check from any thread that the client has
// hung up. The socket is non-blocking and every wait is a poll() with a
// deadline, over TLS too (then `ssl` is set), so that no read outlives it.
class ClientConnection final : public httplib::Stream {
 public:
  // Owns `fd` and `ssl` (either may be unusable: see usable()). Its work is
  // abandoned once the clock passes `streams_end_ns` (the gateway stopping).
  ClientConnection(int fd, SSL* ssl, bool tls, absl::Duration write_timeout,
                   const std::atomic<int64_t>& streams_end_ns)
      : fd_(fd), ssl_(ssl), tls_(tls), write_timeout_(write_timeout),
        streams_end_ns_(streams_end_ns) {
    ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK);
    if (ssl_) {
      SSL_set_fd(ssl_, fd_);
      // SSL_write reports what went out as it goes, as send does: the
      // client's progress is seen (sent_), and a large answer is not one
      // all-or-nothing write.
      SSL_set_mode(ssl_, SSL_MODE_ENABLE_PARTIAL_WRITE);
    }
    Address(::getpeername, &remote_ip_, &remote_port_);
    Address(::getsockname, &local_ip_, &local_port_);
  }
  ~ClientConnection() override {
    if (ssl_) {
      ERR_clear_error();
      if (handshaken_) SSL_shutdown(ssl_);  // one non-blocking try
      SSL_free(ssl_);
    }
    // What the client already sent is dropped first: a close with unread
    // bytes resets the connection, and the client may lose the answer.
    ::shutdown(fd_, SHUT_WR);
    char discard[4096];
    for (int i = 0; i < 16 && ::recv(fd_, discard, sizeof(discard), MSG_DONTWAIT) > 0; ++i) {
    }
    ::close(fd_);
  }
  ClientConnection(const ClientConnection&) = delete;
  ClientConnection& operator=(const ClientConnection&) = delete;

  bool usable() const { return !tls_ || ssl_ != nullptr; }
  const std::string& remote_ip() const { return remote_ip_; }

  // The TLS handshake, if any, by `deadline`.
  bool Handshake(absl::Time deadline) {
    if (!ssl_) return usable();
    while (true) {
      ERR_clear_error();
      const int done = SSL_accept(ssl_);
      if (done == 1) return handshaken_ = true;
      const int error = SSL_get_error(ssl_, done);
      if (error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE) return false;
      if (!Await(error == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline)) return false;
    }
  }

  // Waits for the next request's first byte until `deadline`; false if none
  // comes, or once the server stops listening.
  bool WaitForRequest(absl::Time deadline, const std::atomic<socket_t>& listening) {
    if (buffered() > 0 || (ssl_ && SSL_pending(ssl_) > 0)) return true;
    while (listening != INVALID_SOCKET) {
      const absl::Time slice = std::min(deadline, absl::Now() + absl::Milliseconds(100));
      if (Await(POLLIN, slice)) return true;
      if (slice == deadline) return false;
    }
    return false;
  }

  // Reads from here on are the head of a request, due by `deadline`.
  void ExpectHead(absl::Time deadline) {
    deadline_ = deadline;
    head_pending_ = true;
    head_bytes_ = 0;
    head_.clear();
    late_ = false;
  }
  // The head is in (httplib parsed it): what follows is the body, which may
  // take at most `max_raw_bytes` off the wire, chunk framing included
  // (httplib reads a chunk's size line whole, however long).
  void HeadRead(size_t max_raw_bytes) {
    head_pending_ = false;
    chunks_.reset();
    deadline_ = absl::Now() + kBodyTimeout;
    body_bytes_ = 0;
    body_limit_ = max_raw_bytes;
    body_over_limit_ = false;
  }
  // The body is chunked: its framing is checked as httplib reads it, and a
  // read fails at the first byte outside the grammar (chunk_problem()).
  void ExpectChunked() { chunks_.emplace(); }
  // Why the chunked body's framing was refused; empty if it was not.
  std::string chunk_problem() const { return chunks_ ? chunks_->problem() : ""; }
  // True until HeadRead: httplib refused the head, or it was late or large.
  bool head_pending() const { return head_pending_; }
  // The request's head as it came, request line to empty line: httplib reads
  // it a byte at a time, so no byte of the body is in it.
  const std::string& head() const { return head_; }
  // A read of this request gave up waiting: past its head's or body's
  // deadline, or kReadTimeout without a byte.
  bool late() const { return late_; }
  // The head ran into kMaxHeadBytes before it ended.
  bool head_past_limit() const { return head_pending_ && head_bytes_ >= kMaxHeadBytes; }
  // True once a read of the body failed at its limit (body_limit()).
  bool body_over_limit() const { return body_over_limit_; }
  size_t body_limit() const { return body_limit_; }
  // The connection ends after the answer to this request: httplib keeps it
  // open unless a write fails or the client asked, even where the request's
  // body is unread (a refusal; a HEAD request, whose body httplib never
  // reads, is refused when it has one).
  void CloseAfterAnswer() { closing_ = true; }
  bool closing() const { return closing_; }

  // Breaks the connection, so that a write blocked on a client that reads
  // too slowly returns: each wait for it is bounded, but a trickle of reads
  // starts a new one. Safe from any thread while the connection is open.
  void Abort() const { ::shutdown(fd_, SHUT_RDWR); }

  // Whether the grid or curve this connection serves should stop: its
  // client hung up, or the gateway is stopping and its grace has passed.
  bool Abandoned() const { return ClientClosed() || Stopping(); }
  // Whether the gateway is stopping and its grace has passed.
  bool Stopping() const { return absl::GetCurrentTimeNanos() > streams_end_ns_.load(); }

  // Whether the client has hung up. Safe from any thread: it only polls.
  bool ClientClosed() const {
    pollfd p{fd_, POLLRDHUP, 0};
    return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
  }

  // The first `n` bytes of the request, or fewer if `deadline` comes first.
  std::string ReadStart(size_t n, absl::Time deadline) {
    std::string start(n, '\0');
    size_t got = 0;
    while (got < n) {
      const ssize_t more = Receive(start.data() + got, n - got, deadline);
      if (more <= 0) break;
      got += static_cast<size_t>(more);
    }
    start.resize(got);
    return start;
  }

  bool WriteAll(absl::string_view data) { return write(data.data(), data.size()) >= 0; }

  // httplib::Stream
  bool is_readable() const override {
    return buffered() > 0 || (ssl_ && SSL_pending(ssl_) > 0) ||
           Await(POLLIN, std::min(deadline_, absl::Now() + kReadTimeout));
  }
  bool is_writable() const override {
    return Await(POLLOUT, absl::Now() + write_timeout_) && !ClientClosed();
  }
  ssize_t read(char* data, size_t size) override {
    if (head_pending_) {
      if (head_bytes_ >= kMaxHeadBytes) return -1;
      size = std::min(size, kMaxHeadBytes - head_bytes_);
    } else {
      if (body_bytes_ >= body_limit_) {
        body_over_limit_ = true;
        return -1;
      }
      size = std::min(size, body_limit_ - body_bytes_);
    }
    if (buffered() == 0) {
      const absl::Time due = std::min(deadline_, absl::Now() + kReadTimeout);
      const ssize_t n = Receive(buffer_, sizeof(buffer_), due);
      if (n < 0 && absl::Now() >= due) late_ = true;
      if (n <= 0) return n;
      buffer_begin_ = 0;
      buffer_end_ = static_cast<size_t>(n);
    }
    const size_t n = std::min(size, buffered());
    std::memcpy(data, buffer_ + buffer_begin_, n);
    if (head_pending_) head_.append(buffer_ + buffer_begin_, n);
    buffer_begin_ += n;
    if (!head_pending_ && chunks_ && !chunks_->Take(absl::string_view(data, n))) return -1;
    (head_pending_ ? head_bytes_ : body_bytes_) += n;
    return static_cast<ssize_t>(n);
  }
  // All of `data`, or -1; each wait for the client to take more is bounded,
  // and so is the whole write past kSlowWriteGrace (kMinWriteBytesPerSecond).
  ssize_t write(const char* data, size_t size) override {
    const absl::Time began = absl::Now();
    for (size_t sent = 0; sent < size;) {
      short wait = POLLOUT;
      if (ssl_) {
        ERR_clear_error();
        const int n = SSL_write(ssl_, data + sent, ClampToInt(size - sent));
        if (n > 0) {
          sent += static_cast<size_t>(n);
          sent_.fetch_add(n, std::memory_order_relaxed);
          continue;
        }
        const int error = SSL_get_error(ssl_, n);
        if (error == SSL_ERROR_WANT_READ) {
          wait = POLLIN;
        } else if (error != SSL_ERROR_WANT_WRITE) {
          return -1;
        }
      } else {
        const ssize_t n = ::send(fd_, data + sent, size - sent, MSG_NOSIGNAL);
        if (n > 0) {
          sent += static_cast<size_t>(n);
          sent_.fetch_add(n, std::memory_order_relaxed);
          continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) return -1;
      }
      const double elapsed = absl::ToDoubleSeconds(absl::Now() - began);
      if (elapsed > absl::ToDoubleSeconds(kSlowWriteGrace) &&
          static_cast<double>(sent) < elapsed * kMinWriteBytesPerSecond) {
        cut_off_ = true;
        return -1;
      }
      if (!Await(wait, absl::Now() + write_timeout_)) {
        if (!Stopping()) cut_off_ = true;
        return -1;
      }
    }
    return static_cast<ssize_t>(size);
  }
  // Bytes handed to the client so far. Safe from any thread.
  int64_t Sent() const { return sent_.load(std::memory_order_relaxed); }
  // Whether a write gave up on a client reading too slowly (under the
  // floor, or nothing taken for the write timeout), not on one that hung
  // up. Safe from any thread.
  bool CutOff() const { return cut_off_.load(); }
  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    ip = remote_ip_;
    port = remote_port_;
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    ip = local_ip_;
    port = local_port_;
  }
  socket_t socket() const override { return fd_; }

 private:
  static int ClampToInt(size_t n) {
    return static_cast<int>(std::min<size_t>(n, std::numeric_limits<int>::max()));
  }
  size_t buffered() const { return buffer_end_ - buffer_begin_; }

  void Address(int (*get)(int, sockaddr*, socklen_t*), std::string* ip, int* port) const {
    sockaddr_storage address{};
    socklen_t length = sizeof(address);
    char host[NI_MAXHOST];
    char service[NI_MAXSERV];
    if (get(fd_, reinterpret_cast<sockaddr*>(&address), &length) == 0 &&
        ::getnameinfo(reinterpret_cast<sockaddr*>(&address), length, host, sizeof(host),
                      service, sizeof(service), NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
      *ip = host;
      *port = std::atoi(service);
    }
  }

  // Waits until the socket is ready for `events` (or failed), by `deadline`,
  // and not past the end of a stopping gateway's grace: a client reading or
  // sending slowly cannot hold its thread, and the shutdown, beyond it.
  bool Await(short events, absl::Time deadline) const {
    deadline = std::min(deadline, absl::FromUnixNanos(streams_end_ns_.load()));
    while (true) {
      const absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) return false;
      pollfd p{fd_, events, 0};
      const int n = ::poll(&p, 1, ClampToInt(absl::ToInt64Milliseconds(left) + 1));
      if (n > 0) return true;
      if (n < 0 && errno != EINTR) return false;
    }
  }

  // Up to `size` bytes: 0 once the client has closed, -1 on an error or at
  // `deadline`.
  ssize_t Receive(char* data, size_t size, absl::Time deadline) {
    while (true) {
      short wait = POLLIN;
      if (ssl_) {
        ERR_clear_error();
        const int n = SSL_read(ssl_, data, ClampToInt(size));
        if (n > 0) return n;
        const int error = SSL_get_error(ssl_, n);
        if (error == SSL_ERROR_ZERO_RETURN) return 0;
        if (error == SSL_ERROR_WANT_WRITE) {
          wait = POLLOUT;
        } else if (error != SSL_ERROR_WANT_READ) {
          return -1;
        }
      } else {
        const ssize_t n = ::recv(fd_, data, size, 0);
        if (n >= 0) return n;
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
      }
      if (!Await(wait, deadline)) return -1;
    }
  }

  const int fd_;
  SSL* const ssl_;
  const bool tls_;
  // How long one wait for the client to take more of an answer may last.
  const absl::Duration write_timeout_;
  const std::atomic<int64_t>& streams_end_ns_;
  bool handshaken_ = false;
  std::string remote_ip_;
  std::string local_ip_;
  int remote_port_ = -1;
  int local_port_ = -1;
  // Of the request being read: its head's, then its body's.
  absl::Time deadline_ = absl::InfiniteFuture();
  bool head_pending_ = false;
  bool late_ = false;
  size_t head_bytes_ = 0;
  std::string head_;  // at most kMaxHeadBytes
  std::optional<ChunkedFraming> chunks_;  // of a chunked body
  size_t body_bytes_ = 0;
  size_t body_limit_ = 0;
  bool body_over_limit_ = false;
  bool closing_ = false;
  std::atomic<int64_t> sent_{0};  // bytes written, read by a grid's ClientWatch
  std::atomic<bool> cut_off_{false};
  char buffer_[4096];
  size_t buffer_begin_ = 0;
  size_t buffer_end_ = 0;
};

void CloseAfterAnswer() {
  if (t_connection) t_connection->CloseAfterAnswer();
}

bool HeadUnread() { return t_connection && t_connection->head_pending(); }
bool HeadPastLimit() { return t_connection && t_connection->head_past_limit(); }
bool RequestLate() { return t_connection && t_connection->late(); }

// A connection past a cap is answered without reading its request: it has
// `wait` (kRefusalWait, or kHurriedRefusalWait) to show that it is a health
// check (which answers even at the cap, for the readiness probe); all else
// gets 503. The status written, 0 if none.
int Refuse(ClientConnection& connection, const std::string& why, absl::Duration wait) {
  const absl::Time deadline = absl::Now() + wait;
  if (!connection.Handshake(deadline)) return 0;
  const std::string start = connection.ReadStart(sizeof("HEAD /healthz ") - 1, deadline);
  const bool health = absl::StartsWith(start, "GET /healthz ") ||
                      absl::StartsWith(start, "GET /healthz?") ||
                      absl::StartsWith(start, "HEAD /healthz ");
  connection.WriteAll(
      health ? RawAnswer(200, "OK", "text/plain", "ok\n", "")
             : RawAnswer(503, "Service Unavailable", "application/json",
                         ErrorJson(absl::UnavailableError(absl::StrCat(why, "; retry later"))),
                         "Retry-After: 1\r\n"));
  return health ? 200 : 503;
}

// httplib's step for one request: Server::process_request.
using RequestStep = std::function<bool(httplib::Stream&, bool last, bool& closed)>;

// A connection's bounds in time (HttpGatewayOptions), and where its
// answers written past httplib are counted.
struct ConnectionTimes {
  absl::Duration head;
  absl::Duration write;
  OrchestratorMetrics* metrics = nullptr;
};

// An answer written before httplib read the request (a cap's refusal, a
// request line too long or too late): route "connection".
void CountConnectionAnswer(OrchestratorMetrics* metrics, int status) {
  if (metrics && status != 0) metrics->CountHttpAnswer("connection", status);
}

// Serves one accepted connection in place of httplib's own loop: a cap per
// client address, a deadline (times.head) on each request's head, and up to
// kRequestsPerConnection requests, each given to `step`.
void ServeConnection(int fd, SSL_CTX* tls, const std::atomic<socket_t>& listening,
                     ConnectionsPerClient& per_client, ConnectionTimes times,
                     const std::atomic<int64_t>& streams_end_ns, const RequestStep& step) {
  const absl::Duration head_timeout = times.head;
  const absl::Time opened = absl::Now();
  ClientConnection connection(fd, tls ? SSL_new(tls) : nullptr, tls != nullptr, times.write,
                              streams_end_ns);
  if (!connection.usable()) return;
  if (t_over_capacity) {
    return CountConnectionAnswer(
        times.metrics, Refuse(connection, "too many open connections", *t_over_capacity));
  }
  const std::string client = ClientKey(connection.remote_ip());
  if (!per_client.Take(client)) {
    return CountConnectionAnswer(
        times.metrics,
        Refuse(connection, "too many open connections from this address", kRefusalWait));
  }
  absl::Cleanup release = [&] { per_client.Release(client); };
  if (!connection.Handshake(opened + head_timeout)) return;
  t_connection = &connection;
  absl::Cleanup forget = [] { t_connection = nullptr; };
  absl::Time head_due = opened + head_timeout;
  for (size_t served = 0; served < kRequestsPerConnection; ++served) {
    if (!connection.WaitForRequest(std::min(head_due, absl::Now() + kIdleTimeout), listening)) {
      return;
    }
    connection.ExpectHead(head_due);
    bool closed = false;
    const int64_t sent_before = connection.Sent();
    const bool answered = step(connection, served + 1 == kRequestsPerConnection, closed);
    if (connection.head_past_limit() && connection.Sent() == sent_before) {
      // A request line that did not end within kMaxHeadBytes: httplib
      // gives up on it without a word.
      connection.WriteAll(RawAnswer(
          414, "URI Too Long", "application/json",
          ErrorJson(absl::InvalidArgumentError(absl::StrCat(
              "path: the request line is longer than ", kMaxHeadBytes >> 10, " KiB"))),
          ""));
      CountConnectionAnswer(times.metrics, 414);
      return;
    }
    if (connection.head_pending() && connection.late() && connection.Sent() == sent_before) {
      // A request line that did not end in time: httplib gives up on it
      // without a word too.
      connection.WriteAll(RawAnswer(408, "Request Timeout", "application/json",
                                    ErrorJson(LateRequest(/*head=*/true)), ""));
      CountConnectionAnswer(times.metrics, 408);
      return;
    }
    // A head that httplib refused, or that came late or too large, ends the
    // connection: where the next request would start is unknown. So does
    // an answer that left the body unread.
    if (!answered || closed || connection.head_pending() || connection.closing()) return;
    head_due = absl::Now() + head_timeout;
  }
}

// httplib's server (Base: Server or SSLServer) with ServeConnection in place
// of its connection loop.
template <typename Base>
class BoundedServer final : public Base {
 public:
  template <typename... Args>
  BoundedServer(size_t max_connections_per_client, ConnectionTimes times,
                const std::atomic<int64_t>& streams_end_ns, Args&&... args)
      : Base(std::forward<Args>(args)...),
        per_client_(max_connections_per_client),
        times_(times),
        streams_end_ns_(streams_end_ns) {}

 private:
  bool process_and_close_socket(socket_t sock) override {
    SSL_CTX* tls = nullptr;
    if constexpr (std::is_base_of_v<httplib::SSLServer, Base>) tls = this->ssl_context();
    ServeConnection(sock, tls, this->svr_sock_, per_client_, times_, streams_end_ns_,
                    [this](httplib::Stream& stream, bool last, bool& closed) {
                      return this->process_request(stream, last, closed, nullptr);
                    });
    return true;
  }

  ConnectionsPerClient per_client_;
  const ConnectionTimes times_;
  const std::atomic<int64_t>& streams_end_ns_;
};

// httplib gives each accepted connection to a TaskQueue, and the connection
// holds its worker for as long as it stays open, idle, slow or streaming. So
// each of up to `max_connections` gets a thread of its own at once, and an
// idle socket cannot make another connection wait. Past the cap a few other
// threads take the connection, to refuse it (see Refuse): the queue gets a
// closure, not the socket, so it cannot refuse one itself.
class ConnectionPool : public httplib::TaskQueue {
 public:
  explicit ConnectionPool(size_t max_connections)
      : max_connections_(max_connections),
        serving_(max_connections),
        refusing_(kRefusingThreads) {}

  // Called by httplib's one accept thread.
  void enqueue(std::function<void()> connection) override {
    if (open_.load() < max_connections_) {
      open_.fetch_add(1);
      serving_.enqueue([this, connection = std::move(connection)] {
        connection();
        open_.fetch_sub(1);
      });
      return;
    }
    // A flood of connections past the cap (idle ones, each waited for)
    // would queue for ever longer, a health probe behind them: a refusal
    // with others queued behind it answers from what came within
    // kHurriedRefusalWait (200 idle ones take 0.25 s on 8 threads).
    queued_refusals_.fetch_add(1);
    refusing_.enqueue([this, connection = std::move(connection)] {
      const bool others_wait = queued_refusals_.fetch_sub(1) > 1;
      t_over_capacity = others_wait ? kHurriedRefusalWait : kRefusalWait;
      connection();
      t_over_capacity.reset();
    });
  }

  void shutdown() override {
    serving_.shutdown();
    refusing_.shutdown();
  }

 private:
  static constexpr size_t kRefusingThreads = 8;
  const size_t max_connections_;
  std::atomic<size_t> open_{0};
  std::atomic<size_t> queued_refusals_{0};  // enqueued, not yet started
  httplib::ThreadPool serving_;
  httplib::ThreadPool refusing_;
};

// ---- Cross-origin requests ----

// ---- Host names ----

// The host of a Host header or a configured name: lowercased, without its
// port, brackets or trailing dot.
std::string HostName(absl::string_view value) {
  std::string host = absl::AsciiStrToLower(absl::StripAsciiWhitespace(value));
  if (!host.empty() && host[0] == '[') {
    host = host.substr(1, host.find(']') - 1);
  } else if (std::count(host.begin(), host.end(), ':') == 1) {
    host.resize(host.find(':'));
  }
  if (!host.empty() && host.back() == '.') host.pop_back();
  return host;
}

bool IsIpAddress(const std::string& host) {
  in6_addr address;
  return inet_pton(AF_INET, host.c_str(), &address) == 1 ||
         inet_pton(AF_INET6, host.c_str(), &address) == 1;
}

// Which names the gateway answers to. A page of attacker.example whose name
// is then pointed at this server (DNS rebinding) is same-origin to the
// browser, with Host and Origin both attacker.example, so CorsPolicy lets it
// through; its Host header gives it away. IP addresses and localhost cannot
// be pointed elsewhere, so only other names need listing.
class HostPolicy {
 public:
  static absl::StatusOr<HostPolicy> Create(const std::vector<std::string>& names,
                                           const std::string& listen_host) {
    HostPolicy policy;
    policy.names_.insert("localhost");
    policy.names_.insert(HostName(listen_host));
    for (const std::string& name : names) {
      if (name == "*") {
        policy.any_ = true;
        continue;
      }
      const std::string host = HostName(name);
      if (host.empty() || host.find_first_of("/@ *") != std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--http_allowed_hosts: ", ShortQuote(name), " is not host[:port] or *"));
      }
      policy.names_.insert(host);
    }
    return policy;
  }

  // A request without Host is no browser's.
  bool Allows(const std::string& host_header) const {
    if (any_ || host_header.empty()) return true;
    const std::string host = HostName(host_header);
    return names_.count(host) > 0 || IsIpAddress(host);
  }

 private:
  HostPolicy() = default;
  bool any_ = false;
  std::set<std::string> names_;
};

struct RequestPolicy {
  CorsPolicy cors;
  HostPolicy hosts;
};

// ---- Screening, before any route ----

// The paths that start work: a grid, its stream, a curve's stream.
bool IsPostPath(const std::string& path) {
  return path == kGridPath || path == kStreamPath || path == kCurveStreamPath;
}

// A request's route as the metrics name it: a few fixed values, whatever
// the path (a label per path would grow without bound).
const char* RouteOf(const std::string& path) {
  if (path == kModelsPath) return "models";
  if (path == kGridPath) return "grid";
  if (path == kStreamPath) return "grid_stream";
  if (path == kCurveStreamPath) return "curve_stream";
  if (path == kHealthPath) return "health";
  if (absl::StartsWith(path, kApiPrefix)) return "api_other";
  return "page";
}

// The methods a path takes, for 405's Allow header.
const char* AllowedMethods(const std::string& path) {
  if (IsPostPath(path)) return "POST, OPTIONS";
  return "GET, HEAD, OPTIONS";
}

// The steps of Screen. Each answers (true) or lets the request go on. Their
// refusals close the connection: the request's body, if any, is unread.

// Before them, httplib's header fields give way to the head as the client
// sent it (request_head.h), for the checks here, the handlers and httplib's
// own reading of the body; a head outside RFC 9112's field-line grammar is
// a 400.
bool RefuseOrRestoreHead(absl::string_view head, const httplib::Request& request,
                         httplib::Response& response) {
  absl::StatusOr<std::vector<HeadField>> fields = ParseHeadFields(head);
  if (!fields.ok()) {
    RefuseAndClose(response, 400, fields.status());
    return true;
  }
  auto& headers = const_cast<httplib::Headers&>(request.headers);
  for (const HeadField& field : *fields) headers.erase(field.name);
  for (HeadField& field : *fields) headers.emplace(std::move(field.name), std::move(field.value));
  return false;
}

// httplib compresses an answer for a client whose Accept-Encoding holds
// "br" or "gzip" anywhere, "gzip;q=0" too: it reads the codings accepted.
void ReadAcceptEncoding(const httplib::Request& request) {
  if (!request.has_header("Accept-Encoding")) return;
  std::vector<std::string> values;
  for (size_t i = 0; i < request.get_header_value_count("Accept-Encoding"); ++i) {
    values.push_back(request.get_header_value("Accept-Encoding", i));
  }
  const std::string accepted = AcceptedCodings(absl::StrJoin(values, ","));
  auto& headers = const_cast<httplib::Headers&>(request.headers);
  headers.erase("Accept-Encoding");
  if (!accepted.empty()) headers.emplace("Accept-Encoding", accepted);
}

// The static file handler stats the path as a C string: "/index.html\0.png"
// would serve index.html, typed by the ".png" it never opened.
bool RefuseControlBytes(const httplib::Request& request, httplib::Response& response) {
  for (const char c : request.path) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      RefuseAndClose(response, 400,
                     absl::InvalidArgumentError(absl::StrCat(
                         "path: control bytes are not allowed, got ", ShortQuote(request.path))));
      return true;
    }
  }
  return false;
}

constexpr char kUnreserved[] =
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~";

// host[:port], or [IPv6][:port]: what a Host header holds (RFC 9110, 7.2).
bool WellFormedHost(absl::string_view value) {
  absl::string_view host = value;
  absl::string_view port;
  if (absl::StartsWith(value, "[")) {
    const size_t close = value.find(']');
    if (close == absl::string_view::npos) return false;
    host = value.substr(1, close - 1);
    const absl::string_view rest = value.substr(close + 1);
    if (!rest.empty() && rest[0] != ':') return false;  // "[::1]x.example"
    port = rest.empty() ? rest : rest.substr(1);
    // An address, then perhaps a zone ("fe80::1%25eth0", RFC 6874; the
    // header is read as sent, not percent-decoded).
    const size_t zone = host.find('%');
    if (host.substr(0, zone).find_first_not_of("0123456789abcdefABCDEF:.") !=
            absl::string_view::npos ||
        (zone != absl::string_view::npos &&
         host.substr(zone + 1).find_first_not_of(kUnreserved) != absl::string_view::npos)) {
      return false;
    }
  } else {
    const size_t colon = value.find(':');
    if (colon != absl::string_view::npos) {
      host = value.substr(0, colon);
      port = value.substr(colon + 1);
    }
    // RFC 3986's reg-name: unreserved characters, escapes and sub-delims.
    if (host.find_first_not_of(absl::StrCat(kUnreserved, "%!$&'()*+,;=")) !=
        absl::string_view::npos) {
      return false;
    }
  }
  return !host.empty() && port.find_first_not_of("0123456789") == absl::string_view::npos;
}

// httplib decodes the path before routing, so "/api/v1/grid%2fstream" was
// the stream and "/api/v1/%6dodels" the models: a proxy in front that allows
// or refuses paths as written would be sidestepped by an encoded slash. A
// path is taken only with its slashes as they are.
bool RefuseEncodedSlash(const httplib::Request& request, httplib::Response& response) {
  const std::string target =
      absl::AsciiStrToLower(request.target.substr(0, request.target.find('?')));
  if (!absl::StrContains(target, "%2f") && !absl::StrContains(target, "%5c")) return false;
  RefuseAndClose(response, 400,
                 absl::InvalidArgumentError(absl::StrCat(
                     "path: an encoded slash (%2F or %5C) is not allowed, got ",
                     ShortQuote(request.target))));
  return true;
}

// Health answers whatever the name, for probes that dial the pod's address.
// A Host twice, an HTTP/1.1 request without one, or one that is no host
// (RFC 9112, 3.2) is a 400 on any path: two could be read differently by a
// proxy in front, and the name check read only the first. So is an
// Authorization twice, of which the token check read only the first.
bool RefuseHost(const HostPolicy& hosts, const httplib::Request& request,
                httplib::Response& response) {
  const std::string host = request.get_header_value("Host");
  const size_t count = request.get_header_value_count("Host");
  const size_t credentials = request.get_header_value_count("Authorization");
  std::string problem;
  if (count > 1) {
    problem = absl::StrCat("Host: given ", count, " times");
  } else if (credentials > 1) {
    problem = absl::StrCat("Authorization: given ", credentials, " times");
  } else if (count == 0 && request.version == "HTTP/1.1") {
    problem = "Host: an HTTP/1.1 request carries one";
  } else if (count == 1 && !WellFormedHost(host)) {
    problem = absl::StrCat("Host: not host[:port], got ", ShortQuote(host));
  }
  if (!problem.empty()) {
    RefuseAndClose(response, 400, absl::InvalidArgumentError(problem));
    return true;
  }
  if (request.path == kHealthPath || hosts.Allows(host)) return false;
  RefuseAndClose(response, 421,
                 absl::PermissionDeniedError(absl::StrCat(
                     "Host ", ShortQuote(host),
                     " is not a name of this server (see the orchestrator's "
                     "--http_allowed_hosts)")));
  return true;
}

// What a proxy in front might frame differently from httplib (request
// smuggling): a length beside chunked, a coding but chunked, lengths that
// differ or are no number; and more headers than any client needs.
bool RefuseFraming(const httplib::Request& request, httplib::Response& response) {
  const size_t lengths = request.get_header_value_count("Content-Length");
  const size_t codings = request.get_header_value_count("Transfer-Encoding");
  std::string problem;
  if (request.headers.size() > kMaxHeaders + kHeadersAddedByHttplib) {
    problem = absl::StrCat("more than ", kMaxHeaders, " headers");
  } else if (lengths > 0 && codings > 0) {
    problem = "Content-Length and Transfer-Encoding together";
  } else if (codings > 0 && request.version == "HTTP/1.0") {
    // RFC 9112, 6.1: faulty framing, as an HTTP/1.0 proxy would not chunk.
    problem = "Transfer-Encoding in an HTTP/1.0 request";
  } else if (codings > 1 ||
             (codings == 1 &&
              !absl::EqualsIgnoreCase(request.get_header_value("Transfer-Encoding"), "chunked"))) {
    problem = absl::StrCat("Transfer-Encoding: only chunked is supported, got ",
                           ShortQuote(request.get_header_value("Transfer-Encoding")));
  } else {
    for (size_t i = 0; i < lengths && problem.empty(); ++i) {
      const std::string length = request.get_header_value("Content-Length", i);
      if (length.empty() || length.find_first_not_of("0123456789") != std::string::npos) {
        problem = absl::StrCat("Content-Length: not a number: ", ShortQuote(length));
      } else if (length != request.get_header_value("Content-Length")) {
        problem = "Content-Length: two different lengths";
      }
    }
  }
  if (problem.empty()) return false;
  RefuseAndClose(response, 400, absl::InvalidArgumentError(problem));
  return true;
}

// An API path the gateway does not serve is a 404 whatever the method, with
// the paths it does serve: not a 405 that suggests another method would do.
bool RefuseUnknownApiPath(const httplib::Request& request, httplib::Response& response) {
  if (!absl::StartsWith(request.path, kApiPrefix) || IsPostPath(request.path) ||
      request.path == kModelsPath) {
    return false;
  }
  RefuseAndClose(response, 404,
                 absl::NotFoundError(absl::StrCat(
                     "no API at ", ShortQuote(request.path), "; the API is GET ", kModelsPath,
                     ", and POST ", kGridPath, ", ", kStreamPath, " and ", kCurveStreamPath)));
  return true;
}

// Only the grid POSTs have a body, which their route reads within its limit.
// httplib would read any other POST's body whole, chunked or not. A grid is
// started only by a POST: with its JSON type, a page of another origin can
// send it only after a preflight, and an <img> or a link cannot.
bool RefuseMethodOrBody(const httplib::Request& request, httplib::Response& response) {
  const bool grid_path = IsPostPath(request.path);
  if (grid_path && request.method == "POST") return false;
  const bool allowed =
      request.method == "OPTIONS" ||
      (!grid_path && (request.method == "GET" || request.method == "HEAD"));
  if (!allowed) {
    response.set_header("Allow", AllowedMethods(request.path));
    RefuseAndClose(response, 405,
                   absl::InvalidArgumentError(absl::StrCat("method ", request.method,
                                                           " is not allowed on ",
                                                           ShortQuote(request.path))));
    return true;
  }
  const std::string length = request.get_header_value("Content-Length");
  if (request.has_header("Transfer-Encoding") || (!length.empty() && length != "0")) {
    RefuseAndClose(response, 400,
                   absl::InvalidArgumentError(
                       absl::StrCat("a ", request.method, " request carries no body")));
    return true;
  }
  return false;
}

bool RefuseOrigin(const CorsPolicy& cors, const httplib::Request& request,
                  httplib::Response& response) {
  const std::string origin = request.get_header_value("Origin");
  if (!CorsPolicy::CrossOrigin(origin, request.get_header_value("Host")) || cors.Allows(origin)) {
    return false;
  }
  if (request.method != "OPTIONS" && !absl::StartsWith(request.path, kApiPrefix)) {
    return false;  // the page's files: the browser keeps them from the script
  }
  RefuseAndClose(response, 403,
                 absl::PermissionDeniedError(absl::StrCat(
                     "origin ", ShortQuote(origin),
                     " may not call this API (see the orchestrator's --http_cors_origins)")));
  return true;
}

// A preflight that RefuseOrigin let through (Decorate adds the origin).
bool AnswerPreflight(const httplib::Request& request, httplib::Response& response) {
  if (request.method != "OPTIONS") return false;
  response.status = 204;
  // The path's methods, for a client that asks without being a browser's
  // preflight (no Origin); there was none.
  response.set_header("Allow", AllowedMethods(request.path));
  response.set_header("Access-Control-Allow-Methods", "GET, POST");
  response.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type");
  response.set_header("Access-Control-Max-Age", "600");
  return true;
}

// What every request goes through before its route, or before httplib
// tells it to send its body (Expect: 100-continue), each step as often as it
// runs: its head as sent, then the refusals. Handled: answered here.
HandlerResponse Screen(const RequestPolicy& policy, const httplib::Request& request,
                       httplib::Response& response) {
  DropRanges(request);
  if (t_connection && RefuseOrRestoreHead(t_connection->head(), request, response)) {
    return HandlerResponse::Handled;
  }
  ReadAcceptEncoding(request);
  const bool answered = RefuseControlBytes(request, response) ||
                        RefuseEncodedSlash(request, response) ||
                        RefuseHost(policy.hosts, request, response) ||
                        RefuseFraming(request, response) ||
                        RefuseUnknownApiPath(request, response) ||
                        RefuseMethodOrBody(request, response) ||
                        RefuseOrigin(policy.cors, request, response) ||
                        AnswerPreflight(request, response);
  return answered ? HandlerResponse::Handled : HandlerResponse::Unhandled;
}

// Headers of every answer. httplib answers a file with 206 when the request
// had a Range header, though its ranges were dropped and the file goes
// whole, and says it takes byte ranges.
void Decorate(const CorsPolicy& cors, const httplib::Request& request,
              httplib::Response& response) {
  if (response.status == 206) response.status = 200;
  response.headers.erase("Accept-Ranges");
  response.set_header("Accept-Ranges", "none");
  response.set_header("X-Content-Type-Options", "nosniff");
  // A refusal that ends the connection: httplib, which did not end it
  // itself, had also offered to keep it alive.
  if (response.get_header_value("Connection") == "close") response.headers.erase("Keep-Alive");
  // httplib may compress the answer, by the request's Accept-Encoding: a
  // cache must not give it to a client that did not ask.
  std::string vary = "Accept-Encoding";
  const std::string origin = request.get_header_value("Origin");
  if (CorsPolicy::CrossOrigin(origin, request.get_header_value("Host")) && cors.Allows(origin)) {
    response.set_header("Access-Control-Allow-Origin", cors.AllowOriginHeader(origin));
    // Else a page of that origin cannot read the wait the API's 429 or 503
    // asks for (the connection cap's 503 goes before this, unheaded).
    response.set_header("Access-Control-Expose-Headers", "Retry-After");
    vary = "Origin, Accept-Encoding";
  }
  response.set_header("Vary", vary);
}

// ---- Request bodies ----

// "application/json", with at most a charset parameter, of UTF-8.
bool IsJsonContentType(absl::string_view content_type) {
  const std::vector<absl::string_view> parts = absl::StrSplit(content_type, ';');
  if (!absl::EqualsIgnoreCase(absl::StripAsciiWhitespace(parts[0]), "application/json")) {
    return false;
  }
  for (size_t i = 1; i < parts.size(); ++i) {
    const absl::string_view parameter = absl::StripAsciiWhitespace(parts[i]);
    if (!parameter.empty() && !absl::EqualsIgnoreCase(parameter, "charset=utf-8") &&
        !absl::EqualsIgnoreCase(parameter, "charset=\"utf-8\"")) {
      return false;
    }
  }
  return true;
}

absl::Status TooLarge(size_t max_bytes) {
  return absl::ResourceExhaustedError(
      absl::StrCat("request body: larger than the limit of ", max_bytes, " bytes"));
}

// The checks of a POST's head that its body cannot change: its type, its
// coding, a declared length. True when it answered.
bool RefuseBodyHead(const httplib::Request& request, size_t max_bytes,
                    httplib::Response& response) {
  const std::string content_type = request.get_header_value("Content-Type");
  if (!IsJsonContentType(content_type)) {
    RefuseAndClose(response, 415,
                   absl::InvalidArgumentError(absl::StrCat(
                       "Content-Type must be application/json, got ", ShortQuote(content_type))));
    return true;
  }
  // httplib inflates a body coded exactly "gzip", "deflate" or "br" (as
  // written: "GZIP" it passed on as it came, which read as broken JSON) and
  // takes "identity" as none. Any other coding it could not read, which is
  // the client's choice (415), not a broken body.
  std::vector<std::string> codings;
  for (size_t i = 0; i < request.get_header_value_count("Content-Encoding"); ++i) {
    codings.push_back(request.get_header_value("Content-Encoding", i));
  }
  if (codings.size() > 1 ||
      (codings.size() == 1 && codings[0] != "gzip" && codings[0] != "deflate" &&
       codings[0] != "br" && codings[0] != "identity")) {
    RefuseAndClose(response, 415,
                   absl::InvalidArgumentError(absl::StrCat(
                       "Content-Encoding must be one of gzip, deflate, br or identity, "
                       "in lower case, got ",
                       ShortQuote(absl::StrJoin(codings, ", ")))));
    return true;
  }
  // Screen let through only "chunked" as a coding, and no length beside it.
  const std::string length = request.get_header_value("Content-Length");
  if (request.has_header("Transfer-Encoding") || length.empty()) return false;
  uint64_t declared = 0;
  // Screen let through only digits: a length that overflows is too large.
  const bool number = absl::SimpleAtoi(length, &declared);
  if (!number && length.find_first_not_of("0123456789") != std::string::npos) {
    RefuseAndClose(response, 400,
                   absl::InvalidArgumentError(
                       absl::StrCat("Content-Length: not a number: ", ShortQuote(length))));
    return true;
  }
  if (!number || declared > max_bytes) {
    RefuseAndClose(response, 413, TooLarge(max_bytes));
    return true;
  }
  return false;
}

// Reads a POST body into `body`, or answers the error and returns false.
// httplib 0.11 holds only a Content-Length to its payload limit and reads a
// chunked body (or one without a length) whole, so here the body is counted
// as it arrives, whatever its framing.
bool ReadBody(const httplib::Request& request, const httplib::ContentReader& reader,
              size_t max_bytes, httplib::Response& response, std::string* body) {
  if (RefuseBodyHead(request, max_bytes, response)) return false;
  if (!request.has_header("Transfer-Encoding") && !request.has_header("Content-Length")) {
    return true;  // no body: all defaults
  }
  const absl::Status too_large = TooLarge(max_bytes);
  bool over = false;
  const bool read = reader([&](const char* data, size_t size) {
    if (body->size() + size > max_bytes) {
      over = true;
      return false;
    }
    body->append(data, size);
    return true;
  });
  if (over) {
    RefuseAndClose(response, 413, too_large);
    return false;
  }
  // Past its bytes on the wire, chunk framing included, the read itself
  // fails: a body within the limit sent in tiny chunks is told so.
  if (t_connection && t_connection->body_over_limit()) {
    RefuseAndClose(response, 413,
                   absl::ResourceExhaustedError(absl::StrCat(
                       "request body: more than ", t_connection->body_limit(),
                       " bytes on the wire, chunk framing included; send larger chunks "
                       "or a Content-Length")));
    return false;
  }
  if (!read && t_connection && !t_connection->chunk_problem().empty()) {
    RefuseAndClose(response, 400,
                   absl::InvalidArgumentError(
                       absl::StrCat("request body: ", t_connection->chunk_problem())));
    return false;
  }
  if (!read && RequestLate()) {
    RefuseAndClose(response, 408, LateRequest(/*head=*/false));
    return false;
  }
  if (!read) {
    RefuseAndClose(response, 400, absl::InvalidArgumentError("request body: cannot be read"));
    return false;
  }
  return true;
}


// ---- Routes ----

Caller CallerOf(const httplib::Request& request) {
  Caller caller;
  caller.client = ClientKey(request.remote_addr);
  caller.authorization = request.get_header_value("Authorization");
  // Polled from GridService's watch thread while a grid runs: a client that
  // hangs up stops its grid, streamed or not.
  // A write stalled past --max_write_stall_s cancels the grid and breaks
  // the connection, as a gRPC call's is cancelled. Both run while the
  // request is served, so the connection outlives them.
  if (const ClientConnection* connection = t_connection) {
    caller.gone = [connection] { return connection->Abandoned(); };
    caller.abort = [connection] { connection->Abort(); };
    caller.sent = [connection] { return connection->Sent(); };
    caller.cut_off = [connection] { return connection->CutOff(); };
  }
  return caller;
}

std::string SseEvent(const std::string& name, const std::string& data) {
  return absl::StrCat("event: ", name, "\ndata: ", data, "\n\n");
}

// An event stream's answer. An HTTP/1.0 client reads no chunked coding (RFC
// 9112, 6.1): its stream goes unframed and ends with the connection.
void SetEventStream(const httplib::Request& request, httplib::Response& response,
                    httplib::ContentProviderWithoutLength provider) {
  response.set_header("Cache-Control", "no-cache");
  if (request.version == "HTTP/1.0") {
    response.set_header("Connection", "close");
    CloseAfterAnswer();
    response.set_content_provider("text/event-stream", std::move(provider));
  } else {
    response.set_chunked_content_provider("text/event-stream", std::move(provider));
  }
}

void ServeModels(GridService& service, const httplib::Request& request,
                 httplib::Response& response) {
  absl::StatusOr<v1::ListModelsResponse> models = service.ListModels(CallerOf(request));
  if (!models.ok()) return SendError(response, models.status());
  response.set_content(ToJson(*models), "application/json");
}

// What a client is told of work that failed: the server stopping cancels it,
// which it must not read as its own doing (CANCELLED) but as a reason to run
// it again, on another replica.
absl::Status Failure(const absl::Status& status) {
  if (status.code() != absl::StatusCode::kCancelled || !t_connection ||
      !t_connection->Stopping()) {
    return status;
  }
  return absl::UnavailableError("the server is shutting down; run it again");
}

void ServeGrid(GridService& service, const v1::GridRequest& grid_request,
               const httplib::Request& request, httplib::Response& response) {
  GridCancel cancel;
  absl::StatusOr<v1::Grid> grid =
      service.RunGrid(CallerOf(request), grid_request, [](const v1::GridEvent&) { return true; },
                      &cancel, /*stream_grid=*/false);
  if (!grid.ok()) return SendError(response, Failure(grid.status()));
  response.set_content(ToJson(*grid), "application/json");
}

// Admits the grid while the answer can still carry a status, then streams
// it: past this point an error can only be an `error` event.
void ServeStream(GridService& service, const v1::GridRequest& grid_request,
                 const httplib::Request& request, httplib::Response& response) {
  const Caller caller = CallerOf(request);
  absl::StatusOr<std::unique_ptr<AdmittedGrid>> admitted = service.Admit(caller, grid_request);
  if (!admitted.ok()) return SendError(response, admitted.status());
  // The provider is a copyable std::function; it holds the grid's admission
  // until the answer is done with.
  std::shared_ptr<const AdmittedGrid> grid = std::move(*admitted);
  GridService* const runner = &service;
  SetEventStream(
      request, response, [runner, caller, grid](size_t, httplib::DataSink& sink) {
        // A client that went away is noticed by caller.gone, or when a
        // write to it fails. (The sink's is_writable() may not be called
        // from GridService's watch thread: it blocks for the write timeout.)
        GridCancel cancel;
        auto send = [&](const std::string& name, const std::string& data) {
          const std::string event = SseEvent(name, data);
          return sink.write(event.data(), event.size());
        };
        auto send_event = [&](const v1::GridEvent& event) {
          const char* name = event.has_plan()    ? "plan"
                             : event.has_trunk() ? "trunk"
                             : event.has_cell()  ? "cell"
                                                 : "grid";
          return send(name, ToJson(event));
        };
        absl::StatusOr<v1::Grid> result =
            runner->Run(*grid, caller, send_event, &cancel, /*stream_grid=*/true);
        if (!result.ok()) send("error", ErrorJson(Failure(result.status())));
        sink.done();
        return true;
      });
}

// A POST handler whose body is a GridRequest.
using GridRoute = void (*)(GridService&, const v1::GridRequest&, const httplib::Request&,
                           httplib::Response&);

// Admits the curve while the answer can still carry a status (as
// ServeStream does a grid), then streams its plan, progress and curve.
void ServeCurveStream(CurveService& curves, const v1::CurveRequest& curve_request,
                      const httplib::Request& request, httplib::Response& response) {
  const Caller caller = CallerOf(request);
  absl::StatusOr<std::unique_ptr<AdmittedCurve>> admitted = curves.Admit(caller, curve_request);
  if (!admitted.ok()) return SendError(response, admitted.status());
  std::shared_ptr<AdmittedCurve> curve = std::move(*admitted);
  CurveService* const runner = &curves;
  SetEventStream(
      request, response, [runner, caller, curve](size_t, httplib::DataSink& sink) {
        auto send = [&](const std::string& name, const std::string& data) {
          const std::string event = SseEvent(name, data);
          return sink.write(event.data(), event.size());
        };
        auto send_event = [&](const v1::CurveEvent& event) {
          const char* name = event.has_plan()       ? "plan"
                             : event.has_progress() ? "progress"
                                                    : "curve";
          return send(name, ToJson(event));
        };
        absl::StatusOr<v1::CurveResult> result = runner->Run(*curve, caller, send_event);
        if (!result.ok()) send("error", ErrorJson(Failure(result.status())));
        sink.done();
        return true;
      });
}

httplib::Server::HandlerWithContentReader CurveRoute(GridService* service, CurveService* curves,
                                                     size_t max_body_bytes) {
  return [service, curves, max_body_bytes](const httplib::Request& request,
                                           httplib::Response& response,
                                           const httplib::ContentReader& reader) {
    std::string body;
    if (!ReadBody(request, reader, max_body_bytes, response, &body)) return;
    // As for grids: the token before the body is parsed.
    if (absl::Status auth = service->Authenticate(CallerOf(request)); !auth.ok()) {
      curves->CountRefusal(auth);
      return SendError(response, auth);
    }
    v1::CurveRequest curve_request;
    if (absl::Status refused = ParseJsonRequest(body, "request body", &curve_request);
        !refused.ok()) {
      curves->CountRefusal(refused);
      return SendError(response, refused);
    }
    ServeCurveStream(*curves, curve_request, request, response);
  };
}

httplib::Server::HandlerWithContentReader PostRoute(GridService* service, size_t max_body_bytes,
                                                    GridRoute route) {
  return [service, max_body_bytes, route](const httplib::Request& request,
                                          httplib::Response& response,
                                          const httplib::ContentReader& reader) {
    std::string body;
    if (!ReadBody(request, reader, max_body_bytes, response, &body)) return;
    // The token before the body is parsed: a caller without it learns
    // nothing of what it sent.
    if (absl::Status auth = service->Authenticate(CallerOf(request)); !auth.ok()) {
      service->CountRefusal(auth);
      return SendError(response, auth);
    }
    v1::GridRequest grid_request;
    if (absl::Status parsed = ParseJsonRequest(body, "request body", &grid_request);
        !parsed.ok()) {
      service->CountRefusal(parsed);
      return SendError(response, parsed);
    }
    route(*service, grid_request, request, response);
  };
}

void AddRoutes(GridService* service, CurveService* curves, size_t max_body_bytes,
               httplib::Server& server) {
  server.Get(kHealthPath, [](const httplib::Request&, httplib::Response& response) {
    response.set_content("ok\n", "text/plain");
  });
  server.Get(kModelsPath, [service](const httplib::Request& request,
                                         httplib::Response& response) {
    ServeModels(*service, request, response);
  });
  server.Post(kGridPath, PostRoute(service, max_body_bytes, &ServeGrid));
  server.Post(kStreamPath, PostRoute(service, max_body_bytes, &ServeStream));
  server.Post(kCurveStreamPath, CurveRoute(service, curves, max_body_bytes));
}

absl::StatusOr<std::unique_ptr<httplib::Server>> NewServer(
    const ServerTlsFiles& tls, size_t max_connections_per_client, ConnectionTimes times,
    const std::atomic<int64_t>& streams_end_ns) {
  if (tls.cert.empty() && tls.key.empty()) {
    return std::make_unique<BoundedServer<httplib::Server>>(max_connections_per_client, times,
                                                            streams_end_ns);
  }
  if (tls.cert.empty() || tls.key.empty()) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
  }
  auto server = std::make_unique<BoundedServer<httplib::SSLServer>>(
      max_connections_per_client, times, streams_end_ns, tls.cert.c_str(), tls.key.c_str(),
      tls.client_ca.empty() ? nullptr : tls.client_ca.c_str());
  if (!server->is_valid()) {
    return absl::InvalidArgumentError("--tls_cert/--tls_key: cannot set up HTTPS");
  }
  return std::unique_ptr<httplib::Server>(std::move(server));
}

// The limits that keep one client from holding the server: see
// ConnectionPool and ServeConnection.
void BoundConnections(const HttpGatewayOptions& o, httplib::Server& server) {
  const size_t max_connections = static_cast<size_t>(std::max(o.max_connections, 1));
  server.new_task_queue = [max_connections] { return new ConnectionPool(max_connections); };
  server.set_payload_max_length(o.max_body_bytes);
  // Only for the Keep-Alive header httplib writes: ServeConnection keeps them.
  server.set_keep_alive_timeout(absl::ToInt64Seconds(kIdleTimeout));
  server.set_keep_alive_max_count(kRequestsPerConnection);
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpGateway>> HttpGateway::Start(const HttpGatewayOptions& o,
                                                                 GridService* service,
                                                                 CurveService* curves) {
  auto gateway = std::unique_ptr<HttpGateway>(new HttpGateway());
  ASSIGN_OR_RETURN(const HostPort at, ParseHostPort("--http_addr", o.address));
  const std::string host = at.host.empty() ? "0.0.0.0" : at.host;
  const int port = at.port;
  if (o.head_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--http_head_timeout_s must be positive");
  }
  if (o.write_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("the HTTP write timeout must be positive");
  }
  const size_t per_client = static_cast<size_t>(std::max(o.max_connections_per_client, 1));
  ASSIGN_OR_RETURN(gateway->server_,
                   NewServer(o.tls, per_client, {o.head_timeout, o.write_timeout, o.metrics},
                             gateway->streams_end_ns_));
  ASSIGN_OR_RETURN(CorsPolicy cors, CorsPolicy::Create(o.cors_origins));
  ASSIGN_OR_RETURN(HostPolicy hosts, HostPolicy::Create(o.allowed_hosts, host));
  const RequestPolicy policy{std::move(cors), std::move(hosts)};
  httplib::Server& server = *gateway->server_;
  ListenAlone(server);
  BoundConnections(o, server);
  // A body's bytes on the wire: its own, and chunk framing of up to as many.
  const size_t max_raw_body = 2 * o.max_body_bytes + (64 << 10);
  server.set_pre_routing_handler(
      [policy, max_raw_body](const httplib::Request& request, httplib::Response& response) {
        // What is left of the request is its body.
        if (t_connection) t_connection->HeadRead(max_raw_body);
        const HandlerResponse screened = Screen(policy, request, response);
        // Screen let through only "chunked" as a coding.
        if (screened == HandlerResponse::Unhandled && t_connection &&
            request.has_header("Transfer-Encoding")) {
          t_connection->ExpectChunked();
        }
        return screened;
      });
  // httplib answers "Expect: 100-continue" before routing: a request the
  // gateway refuses on its head alone was told to go on, and its client sent
  // the body, up to the limit, for nothing. It is refused here; the route
  // checks all again, with the body.
  server.set_expect_100_continue_handler(
      [policy, service, curves, max_body = o.max_body_bytes](const httplib::Request& request,
                                                             httplib::Response& response) {
        if (Screen(policy, request, response) == HandlerResponse::Handled) {
          if (response.get_header_value("Connection") == "close") return response.status;
          // An answer that keeps the connection (an OPTIONS): given in
          // routing, where the head is marked read.
          response = httplib::Response();
          return 100;
        }
        if (!IsPostPath(request.path)) return 100;
        if (RefuseBodyHead(request, max_body, response)) return response.status;
        if (absl::Status auth = service->Authenticate(CallerOf(request)); !auth.ok()) {
          if (request.path == kCurveStreamPath) {
            curves->CountRefusal(auth);
          } else {
            service->CountRefusal(auth);
          }
          SendError(response, auth);
          // The body that follows is unread.
          response.set_header("Connection", "close");
          CloseAfterAnswer();
          return response.status;
        }
        return 100;
      });
  server.set_error_handler(httplib::Server::HandlerWithResponse(FillEmptyError));
  server.set_post_routing_handler(
      [policy](const httplib::Request& request, httplib::Response& response) {
        Decorate(policy.cors, request, response);
      });
  // Every answer httplib writes, refusals and errors included.
  if (o.metrics) {
    server.set_logger([metrics = o.metrics](const httplib::Request& request,
                                            const httplib::Response& response) {
      // No path: httplib answered before it read a request line (one past
      // its 8 KiB, or malformed), as the gateway's own "connection" answers.
      metrics->CountHttpAnswer(request.path.empty() ? "connection" : RouteOf(request.path),
                               response.status);
    });
  }
  if (!o.web_dir.empty() && !server.set_mount_point("/", o.web_dir)) {
    return absl::InvalidArgumentError(absl::StrCat("--web_dir: no folder at ", o.web_dir));
  }
  AddRoutes(service, curves, o.max_body_bytes, server);

  gateway->port_ = BindHttp(server, host, port);
  if (gateway->port_ <= 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen for HTTP on ", o.address, " (in use by another process?)"));
  }
  gateway->thread_ = std::thread([&server] { server.listen_after_bind(); });
  WaitUntilListening(server);
  return gateway;
}

void HttpGateway::Shutdown(absl::Duration grace) {
  // Grids and curves still running after the grace end as if their client
  // had gone; stop() closes the listening socket at once, and the listening
  // thread then joins every connection's.
  const int64_t end = absl::ToUnixNanos(absl::Now() + std::max(grace, absl::ZeroDuration()));
  if (end < streams_end_ns_.load()) streams_end_ns_.store(end);
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

HttpGateway::~HttpGateway() { Shutdown(absl::ZeroDuration()); }

}  // namespace dgrid
