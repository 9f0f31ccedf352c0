// Serves a prometheus-cpp registry as GET /metrics (text format 0.0.4) on
// its own threads: cpp-httplib listens and accepts, and each connection's
// one request is read and answered here, within bounds httplib lacks (see
// metrics_exposer.cc). prometheus-cpp's own civetweb Exposer fails to start
// on this project's machines ("null context when constructing
// CivetServer", both here and on the GPU hosts).
// Port 0 picks a free port. A server may also answer GET /healthz here:
// plain HTTP, for probes of a server whose own port speaks TLS.
//
//   ASSIGN_OR_RETURN(auto endpoint, MetricsEndpoint::Start("127.0.0.1:0", registry));
//   endpoint->port();
#ifndef DGRID_COMMON_METRICS_EXPOSER_H_
#define DGRID_COMMON_METRICS_EXPOSER_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace httplib {
class Server;
}
namespace prometheus {
class Registry;
}

namespace dgrid {

class MetricsEndpoint {
 public:
  // With `ready`, GET /healthz answers 200 "ok" while it is true, else 503.
  static absl::StatusOr<std::unique_ptr<MetricsEndpoint>> Start(
      const std::string& address, std::shared_ptr<prometheus::Registry> registry,
      std::function<bool()> ready = nullptr);
  ~MetricsEndpoint();

  int port() const { return port_; }

 private:
  MetricsEndpoint() = default;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace dgrid

#endif  // DGRID_COMMON_METRICS_EXPOSER_H_
