// A running orchestrator: the replica pool, the prefix cache, the executor
// and the gRPC server (Orchestrator, health, reflection), plus metrics.
// main.cc and the tests start it the same way.
//
//   OrchestratorServerOptions options;
//   options.denoisers = "127.0.0.1:50051,127.0.0.1:50052";
//   ASSIGN_OR_RETURN(auto server, OrchestratorServer::Start(options));
//   server->Wait();
#ifndef DGRID_GRID_ORCHESTRATOR_SERVER_ORCHESTRATOR_SERVER_H_
#define DGRID_GRID_ORCHESTRATOR_SERVER_ORCHESTRATOR_SERVER_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/tls.h"
#include "grid_orchestrator/execute/grid_executor.h"
#include "grid_orchestrator/server/curve_service.h"
#include "grid_orchestrator/server/grid_service.h"
#include "grid_orchestrator/server/orchestrator_service_impl.h"

namespace grpc {
class Server;
}

namespace dgrid {

class HttpGateway;
class MetricsEndpoint;
class OrchestratorMetrics;
class PrefixCache;
class ReplicaPool;

struct OrchestratorServerOptions {
  std::string listen = "127.0.0.1:0";
  // "host:port,..." or "dns:///name:port".
  std::string denoisers;
  std::string metrics_addr;
  OrchestratorLimits limits;
  CurveLimits curves;
  ExecutorOptions executor;
  int replica_max_inflight = 64;
  // ReplicaPool::Options::stall_penalty.
  absl::Duration replica_stall_penalty = absl::Seconds(30);
  size_t cache_bytes = size_t{256} << 20;
  int max_message_bytes = 64 << 20;
  // TLS for the orchestrator's own API (PEM paths; see common/tls.h).
  ServerTlsFiles tls;
  // TLS to the denoisers: their CA, and a client certificate for mutual TLS.
  ChannelTlsFiles denoiser_tls;
  // Name the denoisers' certificates carry, when they are dialled by IP.
  std::string denoiser_tls_name;
  // The bearer token the denoisers require (their --auth_token_file).
  std::string denoiser_token;
  // Told the denoisers' changes of state (ReplicaPool::Options::log).
  std::function<void(const std::string& line)> log;
  // Bearer token the API requires (health stays open); empty = no auth.
  std::string auth_token;
  // HTTP gateway (page, JSON API, SSE); empty address = off. It reuses the
  // API's TLS files.
  std::string http_addr;
  std::string web_dir;
  // Other origins whose pages may call the HTTP API, or "*"; empty:
  // same-origin only.
  std::vector<std::string> http_cors_origins;
  // HTTP connections open at once, in all and from one client address;
  // past either a connection gets 503.
  int http_max_connections = 256;
  int http_max_connections_per_client = 24;
  // How long a request's head may take to arrive (HttpGatewayOptions).
  absl::Duration http_head_timeout = absl::Seconds(10);
  // Host names besides IP addresses and localhost the HTTP API answers to.
  std::vector<std::string> http_allowed_hosts;
};

class OrchestratorServer {
 public:
  static absl::StatusOr<std::unique_ptr<OrchestratorServer>> Start(
      const OrchestratorServerOptions& options);
  ~OrchestratorServer();

  int port() const { return port_; }
  int metrics_port() const;
  // 0 when the HTTP gateway is off.
  int http_port() const;
  PrefixCache& cache() { return *cache_; }
  void Wait();
  void Shutdown(absl::Duration grace = absl::Seconds(5));

 private:
  OrchestratorServer();

  std::unique_ptr<OrchestratorMetrics> metrics_;
  std::unique_ptr<MetricsEndpoint> metrics_endpoint_;
  std::unique_ptr<ReplicaPool> pool_;
  std::unique_ptr<PrefixCache> cache_;
  std::unique_ptr<GridExecutor> executor_;
  std::unique_ptr<GridService> grid_service_;
  std::unique_ptr<CurveService> curve_service_;
  std::unique_ptr<OrchestratorServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<HttpGateway> http_;
  int port_ = 0;
};

}  // namespace dgrid

#endif  // DGRID_GRID_ORCHESTRATOR_SERVER_ORCHESTRATOR_SERVER_H_
