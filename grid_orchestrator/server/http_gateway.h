// The orchestrator's HTTP face (cpp-httplib): the browser explorer's static
// files, a JSON API that mirrors the gRPC one through protobuf's JSON
// mapping, and the grid stream as Server-Sent Events. It calls the same
// GridService as gRPC, so it has the same limits and bearer token (one
// budget per client address across both), and it speaks TLS with the same
// certificate flags.
//
//   GET  /api/v1/models               ListModels
//   POST /api/v1/grid                 CreateGrid (GridRequest JSON -> Grid JSON)
//   POST /api/v1/grid/stream          StreamGrid as SSE: events plan, trunk, cell, grid, error
//   POST /api/v1/curve/stream         DecisionCurve as SSE (CurveRequest JSON): events plan,
//                                     progress, curve, error
//   GET  /healthz                     200 while serving (no token or host name needed)
//   GET  /...                         files under web_dir
//
// What a client is held to, since anyone may connect:
//   - A grid starts only by a POST whose body is `application/json` (else
//     405 or 415), which a page of another origin cannot send without a
//     preflight. The body is at most max_body_bytes, chunked or not (else
//     413), and matches GridRequest's shape: no list where a value goes, no
//     lone value for a list, no nesting past 32 levels (else 400).
//   - Framing is unambiguous (else 400): no two Content-Lengths that differ,
//     no Content-Length beside Transfer-Encoding, no coding but chunked, at
//     most 100 headers. A head (request line and headers) holds at most
//     64 KiB (else 431), its request line 8 KiB (else 414), a header line
//     8 KiB (else 400). A body takes at most twice max_body_bytes plus
//     64 KiB on the wire, chunk framing included (else 413). A refused
//     request's connection closes: its unread body is never read as a
//     request.
//   - The Host header names this server: an IP address, localhost, the
//     listen host or one of allowed_hosts (else 421), so that a page whose
//     name is re-pointed here (DNS rebinding) is refused.
//   - A grid request that fails admission (token, limits, plan) gets its 4xx
//     before a stream starts; only errors after that are `event: error`.
//   - A grid whose client hangs up stops, streamed or not; one whose write
//     blocks past max_write_stall stops and its connection is shut down.
//   - Shutdown(grace) stops listening at once; grids, curves and reads still
//     running after the grace end (UNAVAILABLE: run it again).
//   - Every connection up to max_connections has a thread of its own, so
//     idle or slow ones delay no one. Past the cap, or past
//     max_connections_per_client from one address, a connection gets 503
//     (health 200) without its request being read. A request's head must
//     arrive within 10 s however it is paced, its body within 30 s more;
//     idle connections close after 5 s.
//   - Browsers: same-origin only, unless cors_origins names other origins.
//   - Error messages echo at most a short piece of any value.
//
//   HttpGatewayOptions options;
//   options.address = "0.0.0.0:8080";
//   options.web_dir = "clients/web";
//   options.allowed_hosts = {"grid.example.com"};
//   ASSIGN_OR_RETURN(std::unique_ptr<HttpGateway> gateway, HttpGateway::Start(options, &service));
#ifndef DGRID_GRID_ORCHESTRATOR_SERVER_HTTP_GATEWAY_H_
#define DGRID_GRID_ORCHESTRATOR_SERVER_HTTP_GATEWAY_H_

#include <atomic>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/tls.h"
#include "grid_orchestrator/server/curve_service.h"
#include "grid_orchestrator/server/grid_service.h"

namespace httplib {
class Server;
}

namespace dgrid {

class OrchestratorMetrics;

struct HttpGatewayOptions {
  // host:port; port 0 picks a free one.
  std::string address;
  // Static files of the page (clients/web); empty serves the API only.
  std::string web_dir;
  // cert + key enable HTTPS.
  ServerTlsFiles tls;
  size_t max_body_bytes = 1 << 20;
  // Origins besides the page's own whose scripts may call the API, as
  // "https://host[:port]", or "*" for any. Empty: same-origin only.
  std::vector<std::string> cors_origins;
  // Connections open at once. Each holds a thread while open (httplib's
  // model), so this bounds threads too; it must leave room for
  // max_concurrent_grids streams.
  int max_connections = 256;
  // Connections open at once from one client address (IP): slow clients
  // from one address cannot take every place.
  int max_connections_per_client = 24;
  // How long a request's head may take to arrive, from the connection's
  // opening or the previous answer; a slower one (slowloris) is cut off.
  absl::Duration head_timeout = absl::Seconds(10);
  // How long one write may wait for the client to take a byte before the
  // connection breaks. The orchestrator sets it past --max_write_stall_s,
  // whose watch (which knows the grid) decides a stream's stall first.
  absl::Duration write_timeout = absl::Seconds(25);
  // Names besides IP addresses, localhost and the listen host under which
  // the API may be reached, as "host[:port]", or "*" for any.
  std::vector<std::string> allowed_hosts;
  // Counts every answer (OrchestratorMetrics::CountHttpAnswer); none if null.
  OrchestratorMetrics* metrics = nullptr;
};

class HttpGateway {
 public:
  static absl::StatusOr<std::unique_ptr<HttpGateway>> Start(const HttpGatewayOptions& options,
                                                           GridService* service,
                                                           CurveService* curves);
  // Stops listening at once; grids and curves over HTTP may run on for
  // `grace`, then stop as if their client had gone. Returns once every
  // connection has closed.
  void Shutdown(absl::Duration grace);
  ~HttpGateway();  // Shutdown with no grace
  int port() const { return port_; }

 private:
  HttpGateway() = default;
  // When running streams end: never, until Shutdown. Outlives server_.
  std::atomic<int64_t> streams_end_ns_{std::numeric_limits<int64_t>::max()};
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace dgrid

#endif  // DGRID_GRID_ORCHESTRATOR_SERVER_HTTP_GATEWAY_H_
