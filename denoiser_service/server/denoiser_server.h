// A running denoiser: loads the bundles, starts one TrajectoryBatcher per
// model, and serves Denoiser, health (per-model status) and reflection over
// gRPC, plus Prometheus metrics and GET /healthz (200 while it serves) on
// the metrics port. main.cc and the tests both start it this way.
//
//   DenoiserServerOptions options;
//   options.model_dirs = {"models/fashion-mnist"};
//   options.listen = "127.0.0.1:0";
//   ASSIGN_OR_RETURN(auto server, DenoiserServer::Start(options));
//   server->port();   // the bound port
//   ...               // until a stop signal
//   server->Shutdown();
#ifndef DGRID_DENOISER_SERVER_DENOISER_SERVER_H_
#define DGRID_DENOISER_SERVER_DENOISER_SERVER_H_

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace grpc {
class Server;
}
namespace prometheus {
class Registry;
}

namespace dgrid {

class DenoiserServiceImpl;
class StallWatchdog;
class DenoiserMetrics;
class MetricsEndpoint;
struct ServedModel;

// --model_dir's folders as bundle folders: a folder with a manifest.json is
// one bundle; a folder without one holds bundles (its subfolders with a
// manifest.json, by name). The order is kept: the first bundle is the
// default model.
absl::StatusOr<std::vector<std::string>> ExpandModelDirs(const std::vector<std::string>& dirs);

struct DenoiserServerOptions {
  // Bundle folders, or folders of bundles (ExpandModelDirs).
  std::vector<std::string> model_dirs;
  // host:port; port 0 picks a free one (see port()).
  std::string listen = "127.0.0.1:0";
  // Prometheus exposer address; empty disables metrics serving.
  std::string metrics_addr;
  int max_batch = 64;
  int max_queue = 4096;
  int max_trajectories_per_request = 256;
  int max_message_bytes = 16 << 20;
  // Cores to use: torch's intra-op threads, shared among a pass's
  // parallel chunks on a CPU (below); 0 = one per core.
  int threads = 0;
  // A forward or decode pass of at least twice this many rows runs as
  // parallel chunks that share the threads out (engine/forward_workers.h);
  // 0: every pass whole, on intra-op threads alone. CPU models only: a CUDA
  // model always runs its passes whole.
  int min_chunk_rows = 1;
  std::string device = "auto";
  // Clients reconnect (and re-resolve DNS) after this; 0 = never. Calls
  // under way on an old connection get max_connection_age_grace to finish,
  // then are cut: it must outlast the longest call (a row's job can take
  // as long as its grid, up to the orchestrator's --grid_timeout_s).
  absl::Duration max_connection_age = absl::ZeroDuration();
  absl::Duration max_connection_age_grace = absl::Seconds(330);
  // Test-only slow replica.
  absl::Duration debug_step_delay = absl::ZeroDuration();
  // TLS: PEM file paths. With cert and key the server speaks TLS; with a CA
  // as well it requires and verifies client certificates (mutual TLS).
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;
  // When not empty, every Denoiser call must carry "authorization: Bearer
  // <token>": the replica then answers only the orchestrator, whose
  // fairness ranks it trusts (health checks stay open).
  std::string auth_token;
  // A Branch write its client takes nothing of for this long ends the call
  // (a stream nobody reads would hold a server thread and its events).
  absl::Duration max_write_stall = absl::Seconds(20);
};

class DenoiserServer {
 public:
  static absl::StatusOr<std::unique_ptr<DenoiserServer>> Start(
      const DenoiserServerOptions& options);
  ~DenoiserServer();

  int port() const { return port_; }
  // 0 when metrics are off.
  int metrics_port() const;
  std::vector<std::string> model_names() const;
  // Marks every model NOT_SERVING (and /healthz 503), then stops accepting
  // and drains.
  void Shutdown(absl::Duration grace = absl::Seconds(5));

 private:
  DenoiserServer();

  // Declared first, destroyed last: the batchers report to it.
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<DenoiserMetrics> denoiser_metrics_;
  // Serving (models loaded, not shutting down): GET /healthz on the metrics
  // port, for probes where the gRPC port speaks TLS.
  std::shared_ptr<std::atomic<bool>> serving_ = std::make_shared<std::atomic<bool>>(false);
  std::unique_ptr<MetricsEndpoint> metrics_;
  std::unique_ptr<std::map<std::string, ServedModel>> models_;
  // Outlives the service's calls (destroyed after server_ and service_).
  std::unique_ptr<StallWatchdog> write_watch_;
  std::unique_ptr<DenoiserServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace dgrid

#endif  // DGRID_DENOISER_SERVER_DENOISER_SERVER_H_
