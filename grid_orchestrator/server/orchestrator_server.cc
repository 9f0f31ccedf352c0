#include "grid_orchestrator/server/orchestrator_server.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <algorithm>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/grpc_server.h"
#include "common/host_port.h"
#include "common/metrics_exposer.h"
#include "grid_orchestrator/execute/prefix_cache.h"
#include "grid_orchestrator/metrics/orchestrator_metrics.h"
#include "grid_orchestrator/pool/replica_pool.h"
#include "grid_orchestrator/server/http_gateway.h"

namespace dgrid {

OrchestratorServer::OrchestratorServer() = default;

OrchestratorServer::~OrchestratorServer() { Shutdown(absl::ZeroDuration()); }

absl::StatusOr<std::unique_ptr<OrchestratorServer>> OrchestratorServer::Start(
    const OrchestratorServerOptions& o) {
  if (absl::Status listen = CheckGrpcTarget("--listen", o.listen); !listen.ok()) return listen;
  std::unique_ptr<OrchestratorServer> s(new OrchestratorServer());
  s->metrics_ = std::make_unique<OrchestratorMetrics>();
  if (!o.metrics_addr.empty()) {
    auto endpoint = MetricsEndpoint::Start(o.metrics_addr, s->metrics_->registry());
    if (!endpoint.ok()) return endpoint.status();
    s->metrics_endpoint_ = std::move(*endpoint);
  }
  auto server_credentials = ServerCredentialsFromFiles(o.tls);
  if (!server_credentials.ok()) return server_credentials.status();
  auto denoiser_credentials = ChannelCredentialsFromFiles(o.denoiser_tls);
  if (!denoiser_credentials.ok()) return denoiser_credentials.status();
  ReplicaPool::Options pool;
  pool.targets = o.denoisers;
  pool.credentials = *denoiser_credentials;
  pool.tls_server_name = o.denoiser_tls_name;
  pool.call_token = o.denoiser_token;
  pool.log = o.log;
  pool.max_inflight_per_replica = o.replica_max_inflight;
  pool.stall_penalty = o.replica_stall_penalty;
  pool.max_message_bytes = o.max_message_bytes;
  auto created = ReplicaPool::Create(pool, s->metrics_.get());
  if (!created.ok()) return created.status();
  s->pool_ = std::move(*created);
  s->cache_ = std::make_unique<PrefixCache>(o.cache_bytes);
  s->executor_ = std::make_unique<GridExecutor>(s->pool_.get(), s->cache_.get(),
                                                s->metrics_.get(), o.executor);
  s->grid_service_ = std::make_unique<GridService>(s->pool_.get(), s->executor_.get(),
                                                   s->metrics_.get(), o.limits, o.auth_token);
  // Each grid ends within the grid timeout: a curve waiting for a place
  // others hold waits at least that long.
  CurveLimits curves = o.curves;
  curves.max_place_wait = std::max(curves.max_place_wait, o.limits.default_grid_timeout);
  s->curve_service_ = std::make_unique<CurveService>(s->grid_service_.get(), s->pool_.get(),
                                                     s->metrics_.get(), curves);
  s->service_ = std::make_unique<OrchestratorServiceImpl>(
      s->grid_service_.get(), s->curve_service_.get(), o.max_message_bytes);

  std::unique_ptr<grpc::ServerBuilder> builder = NewServerBuilder(
      o.listen, *server_credentials, &s->port_, o.max_message_bytes, "dgrid-orchestrator");
  builder->RegisterService(s->service_.get());
  s->server_ = builder->BuildAndStart();
  if (!s->server_ || s->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", o.listen, " (in use by another process?)"));
  }
  if (!o.http_addr.empty()) {
    HttpGatewayOptions http;
    http.address = o.http_addr;
    http.web_dir = o.web_dir;
    http.tls = o.tls;
    http.cors_origins = o.http_cors_origins;
    http.max_connections = o.http_max_connections;
    http.max_connections_per_client = o.http_max_connections_per_client;
    http.head_timeout = o.http_head_timeout;
    http.write_timeout = o.limits.max_write_stall + absl::Seconds(5);
    http.allowed_hosts = o.http_allowed_hosts;
    http.metrics = s->metrics_.get();
    auto gateway = HttpGateway::Start(http, s->grid_service_.get(), s->curve_service_.get());
    if (!gateway.ok()) return gateway.status();
    s->http_ = std::move(*gateway);
  }
  s->server_->GetHealthCheckService()->SetServingStatus("", true);
  s->server_->GetHealthCheckService()->SetServingStatus("dgrid.v1.Orchestrator", true);
  return s;
}

int OrchestratorServer::http_port() const { return http_ ? http_->port() : 0; }

int OrchestratorServer::metrics_port() const {
  return metrics_endpoint_ ? metrics_endpoint_->port() : 0;
}

void OrchestratorServer::Wait() { server_->Wait(); }

void OrchestratorServer::Shutdown(absl::Duration grace) {
  // Both front ends stop taking work at once and give what runs the same
  // grace: then HTTP ends its grids and curves, and gRPC (a little earlier)
  // its own.
  const absl::Time deadline = absl::Now() + grace;
  std::thread grpc_stop;
  if (service_) {
    // gRPC's own cancelling at the deadline would reach clients as a bare
    // CANCELLED: grids and curves stop a little before, saying why.
    // A quarter of the grace, at most 2 s: time to stop a curve's workers
    // and judge and return before gRPC cancels the call.
    service_->EndCallsAt(deadline - std::min(grace / 4, absl::Seconds(2)));
  }
  if (server_) {
    server_->GetHealthCheckService()->Shutdown();
    grpc_stop = std::thread([this, deadline] { server_->Shutdown(absl::ToChronoTime(deadline)); });
  }
  if (http_) http_->Shutdown(deadline - absl::Now());
  http_.reset();
  if (grpc_stop.joinable()) grpc_stop.join();
  server_.reset();
}

}  // namespace dgrid
