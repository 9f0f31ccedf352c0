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
#ifndef DGRID_GRID_ORCHESTRATOR_SERVER_HTTP_GATEWAY_H_
#define DGRID_GRID_ORCHESTRATOR_SERVER_HTTP_GATEWAY_H_

#include <memory>
#include <string>
#include <thread>

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
