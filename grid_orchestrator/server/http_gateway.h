// The orchestrator's HTTP face (cpp-httplib): the browser explorer's static
// files, a JSON API that mirrors the gRPC one through protobuf's JSON
// mapping, and the grid stream as Server-Sent Events. It calls the same
// GridService as gRPC, so it has the same limits and bearer token, and it
// speaks TLS with the same certificate flags.
//
//   GET  /api/v1/models               ListModels
//   POST /api/v1/grid                 CreateGrid (GridRequest JSON -> Grid JSON)
//   POST /api/v1/grid/stream          StreamGrid as SSE: events plan, trunk, cell, grid, error
//   GET  /api/v1/grid/stream?request=<GridRequest JSON>   the same, for EventSource
//   GET  /healthz                     200 while serving (no token needed)
//   GET  /...                         files under web_dir
//
// What a client is held to, since anyone may connect:
//   - POST bodies are `application/json` (else 415) of at most
//     max_body_bytes, chunked or not (else 413), and match GridRequest's
//     shape: no list where a value goes, no lone value for a list, no
//     nesting past 32 levels (else 400).
//   - A grid request that fails admission (token, limits, plan) gets its 4xx
//     before a stream starts; only errors after that are `event: error`.
//   - Every connection up to max_connections has a thread of its own, so
//     idle or slow ones delay no one; past the cap a connection gets 503.
//     Reads time out after a few seconds, idle connections soon after.
//   - Browsers: same-origin only, unless cors_origins names other origins.
//   - Error messages echo at most a short piece of any value.
//
//   HttpGatewayOptions options;
//   options.address = "0.0.0.0:8080";
//   options.web_dir = "clients/web";
//   ASSIGN_OR_RETURN(std::unique_ptr<HttpGateway> gateway, HttpGateway::Start(options, &service));
#ifndef DGRID_GRID_ORCHESTRATOR_SERVER_HTTP_GATEWAY_H_
#define DGRID_GRID_ORCHESTRATOR_SERVER_HTTP_GATEWAY_H_

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tls.h"
#include "grid_orchestrator/server/grid_service.h"

namespace httplib {
class Server;
}

namespace dgrid {

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
};

class HttpGateway {
 public:
  static absl::StatusOr<std::unique_ptr<HttpGateway>> Start(const HttpGatewayOptions& options,
                                                           GridService* service);
  ~HttpGateway();
  int port() const { return port_; }

 private:
  HttpGateway() = default;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace dgrid

#endif  // DGRID_GRID_ORCHESTRATOR_SERVER_HTTP_GATEWAY_H_
