// dgrid-orchestrator: plans grids and runs them on a pool of dgrid-denoiser
// replicas. Parses flags, starts the server, waits for SIGINT/SIGTERM.
#include <malloc.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "common/server_main.h"
#include "common/tls.h"
#include "grid_orchestrator/server/orchestrator_server.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:50050", "gRPC listen address; port 0 picks one.");
ABSL_FLAG(std::string, denoisers, "127.0.0.1:50051",
          "Denoiser replicas: host:port,... or dns:///name:port (re-resolved).");
ABSL_FLAG(std::string, metrics_addr, "0.0.0.0:9090",
          "Prometheus metrics address; empty disables metrics.");
ABSL_FLAG(std::string, port_file, "", "If set, write 'grpc=PORT', 'metrics=PORT' and 'http=PORT' here.");
ABSL_FLAG(int, max_concurrent_grids, 64, "Grids in flight; past it RESOURCE_EXHAUSTED.");
ABSL_FLAG(int, max_rows, 16, "Rows per grid.");
ABSL_FLAG(int, max_branches, 16, "Branches (columns) per row.");
ABSL_FLAG(int64_t, max_cell_steps, 40000, "rows x branches x steps per grid.");
ABSL_FLAG(int, shutdown_grace_s, 5,
          "On SIGTERM or SIGINT, how long running grids and curves may go on before they end "
          "with UNAVAILABLE; keep it below the pod's terminationGracePeriodSeconds minus its "
          "preStop sleep.");
ABSL_FLAG(int, grid_timeout_s, 300,
          "The longest one grid may run, from its admission; a caller's earlier deadline "
          "wins. Each of a curve's grids has its own.");
ABSL_FLAG(int, job_stall_timeout_s, 15,
          "A denoiser call that reports no progress for this long moves elsewhere.");
ABSL_FLAG(int, replica_stall_penalty_s, 30,
          "A replica that stalled a job gets no new jobs for this long while another serves "
          "the model (0: none).");
ABSL_FLAG(int, retry_backoff_ms, 50, "Wait before a job's second attempt; doubles per attempt.");
ABSL_FLAG(int, max_attempts, 4, "Attempts per job across replicas.");
ABSL_FLAG(int, cells_per_job, 2, "Branch cells per denoiser call.");
ABSL_FLAG(int, replica_max_inflight, 64, "Jobs in flight per replica.");
ABSL_FLAG(int64_t, cache_mb, 256, "Prefix cache size in MiB.");
ABSL_FLAG(int, max_message_bytes, 64 << 20, "gRPC message size limit; -1 = none.");
ABSL_FLAG(int, max_grids_per_client, 16, "Grids in flight from one client address.");
ABSL_FLAG(int, max_curve_trunks, 1000, "Trunks (grids) one decision curve may ask for.");
ABSL_FLAG(int, curve_concurrent_grids, 8,
          "Grids of one decision curve in flight at once (each counts as a grid).");
ABSL_FLAG(int, max_outbox_mb, 16,
          "Event MiB a grid may have waiting for its client; past it the grid is cancelled.");
ABSL_FLAG(int, max_write_stall_s, 20,
          "Seconds one write to a client may block before its grid is cancelled.");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate for the API (enables TLS).");
ABSL_FLAG(std::string, tls_key, "", "PEM private key for the API.");
ABSL_FLAG(std::string, tls_client_ca, "", "PEM CA: require and verify client certificates.");
ABSL_FLAG(std::string, denoiser_ca, "",
          "PEM CA of the denoisers: talk TLS to them and refuse peers it did not sign.");
ABSL_FLAG(std::string, denoiser_cert, "", "PEM client certificate for mutual TLS to denoisers.");
ABSL_FLAG(std::string, denoiser_key, "", "PEM client key for mutual TLS to denoisers.");
ABSL_FLAG(std::string, denoiser_token_file, "",
          "File holding the bearer token the denoisers require (their --auth_token_file); "
          "empty = none.");
ABSL_FLAG(std::string, denoiser_tls_name, "",
          "Name to verify in the denoisers' certificates when dialling them by IP.");
ABSL_FLAG(std::string, http_addr, "",
          "HTTP address for the browser explorer, JSON API and SSE; empty = off.");
ABSL_FLAG(std::string, web_dir, "clients/web", "Folder of the explorer page's static files.");
ABSL_FLAG(std::vector<std::string>, http_cors_origins, {},
          "Other origins whose pages may call the HTTP API (https://host[:port],...), or *; "
          "empty = same-origin only.");
ABSL_FLAG(int, http_max_connections, 256,
          "HTTP connections open at once (each holds a thread); past it 503.");
ABSL_FLAG(int, http_max_connections_per_client, 24,
          "HTTP connections open at once from one client address; past it 503. More than "
          "--max_grids_per_client, so that a grid past that limit gets its 429.");
ABSL_FLAG(int, http_head_timeout_s, 10,
          "Seconds a request's head may take to arrive on an HTTP connection; slower ones "
          "are cut off (slowloris).");
ABSL_FLAG(std::vector<std::string>, http_allowed_hosts, {},
          "Host names (host[:port],...) the HTTP API answers to besides IP addresses, "
          "localhost and the --http_addr host; * for any. Others get 421 (DNS rebinding).");
ABSL_FLAG(std::string, auth_token_file, "",
          "File holding the bearer token clients must send; empty = no auth.");

int main(int argc, char** argv) {
  // glibc gives a thread that finds the arenas busy one of its own, up to 8
  // a core, and keeps what is freed in each. With a thread per call, a mixed
  // load left 15 arenas holding 550 MB the process never gave back (the
  // cache held 19 MB). Two, as the Kubernetes manifests set, unless the
  // environment says otherwise (glibc reads MALLOC_ARENA_MAX and
  // GLIBC_TUNABLES itself).
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if (std::getenv("MALLOC_ARENA_MAX") == nullptr &&
      (tunables == nullptr || std::strstr(tunables, "malloc.arena_max") == nullptr)) {
    mallopt(M_ARENA_MAX, 2);
  }
  absl::SetProgramUsageMessage("dgrid-orchestrator --denoisers=host:port,...");
  dgrid::HelpListsTheProgramsFlags();
  absl::ParseCommandLine(argc, argv);
  const sigset_t stop_signals = dgrid::BlockStopSignals();

  dgrid::OrchestratorServerOptions o;
  o.listen = absl::GetFlag(FLAGS_listen);
  o.denoisers = absl::GetFlag(FLAGS_denoisers);
  // One write a line, so that lines from two threads do not mix.
  o.log = [](const std::string& line) { std::cerr << "dgrid-orchestrator: " + line + "\n"; };
  o.metrics_addr = absl::GetFlag(FLAGS_metrics_addr);
  o.limits.max_concurrent_grids = absl::GetFlag(FLAGS_max_concurrent_grids);
  o.limits.plan.max_rows = absl::GetFlag(FLAGS_max_rows);
  o.limits.plan.max_branches = absl::GetFlag(FLAGS_max_branches);
  o.limits.plan.max_cell_steps = absl::GetFlag(FLAGS_max_cell_steps);
  o.limits.default_grid_timeout = absl::Seconds(absl::GetFlag(FLAGS_grid_timeout_s));
  o.executor.stall_timeout = absl::Seconds(absl::GetFlag(FLAGS_job_stall_timeout_s));
  o.executor.retry_backoff = absl::Milliseconds(absl::GetFlag(FLAGS_retry_backoff_ms));
  o.executor.max_attempts = absl::GetFlag(FLAGS_max_attempts);
  o.executor.cells_per_job = absl::GetFlag(FLAGS_cells_per_job);
  o.replica_max_inflight = absl::GetFlag(FLAGS_replica_max_inflight);
  o.replica_stall_penalty = absl::Seconds(absl::GetFlag(FLAGS_replica_stall_penalty_s));
  o.cache_bytes = static_cast<size_t>(absl::GetFlag(FLAGS_cache_mb)) << 20;
  o.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  o.limits.max_grids_per_client = absl::GetFlag(FLAGS_max_grids_per_client);
  o.curves.max_trunks = absl::GetFlag(FLAGS_max_curve_trunks);
  o.curves.max_concurrent_grids = absl::GetFlag(FLAGS_curve_concurrent_grids);
  o.limits.max_outbox_bytes = static_cast<size_t>(absl::GetFlag(FLAGS_max_outbox_mb)) << 20;
  o.limits.max_write_stall = absl::Seconds(absl::GetFlag(FLAGS_max_write_stall_s));
  o.tls = {absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key),
           absl::GetFlag(FLAGS_tls_client_ca)};
  o.denoiser_tls = {absl::GetFlag(FLAGS_denoiser_ca), absl::GetFlag(FLAGS_denoiser_cert),
                    absl::GetFlag(FLAGS_denoiser_key), "--denoiser_"};
  o.denoiser_tls_name = absl::GetFlag(FLAGS_denoiser_tls_name);
  o.http_addr = absl::GetFlag(FLAGS_http_addr);
  o.web_dir = absl::GetFlag(FLAGS_web_dir);
  o.http_cors_origins = absl::GetFlag(FLAGS_http_cors_origins);
  o.http_max_connections = absl::GetFlag(FLAGS_http_max_connections);
  o.http_max_connections_per_client = absl::GetFlag(FLAGS_http_max_connections_per_client);
  o.http_head_timeout = absl::Seconds(absl::GetFlag(FLAGS_http_head_timeout_s));
  o.http_allowed_hosts = absl::GetFlag(FLAGS_http_allowed_hosts);
  // Limits out of range are refused here: a curve limit of -1 used to hang
  // every curve, a negative size wrapped round to an unbounded one, and a
  // cache of 2^44 MiB to none (its bytes overflow).
  struct Range {
    const char* flag;
    int64_t value;
    int64_t least;
    int64_t most = std::numeric_limits<int64_t>::max();
  };
  const Range ranges[] = {
      {"max_concurrent_grids", absl::GetFlag(FLAGS_max_concurrent_grids), 1},
      {"max_rows", absl::GetFlag(FLAGS_max_rows), 1},
      {"max_branches", absl::GetFlag(FLAGS_max_branches), 1},
      {"max_cell_steps", absl::GetFlag(FLAGS_max_cell_steps), 1},
      {"shutdown_grace_s", absl::GetFlag(FLAGS_shutdown_grace_s), 0},
      {"grid_timeout_s", absl::GetFlag(FLAGS_grid_timeout_s), 1},
      {"job_stall_timeout_s", absl::GetFlag(FLAGS_job_stall_timeout_s), 1},
      {"replica_stall_penalty_s", absl::GetFlag(FLAGS_replica_stall_penalty_s), 0},
      {"retry_backoff_ms", absl::GetFlag(FLAGS_retry_backoff_ms), 0},
      {"max_attempts", absl::GetFlag(FLAGS_max_attempts), 1},
      {"cells_per_job", absl::GetFlag(FLAGS_cells_per_job), 1},
      {"replica_max_inflight", absl::GetFlag(FLAGS_replica_max_inflight), 1},
      {"cache_mb", absl::GetFlag(FLAGS_cache_mb), 0, int64_t{1} << 20},  // 1 TiB
      // -1: gRPC's "no limit"; 0 (or below -1) would refuse every message,
      // the replicas' answers too.
      {"max_message_bytes", absl::GetFlag(FLAGS_max_message_bytes),
       absl::GetFlag(FLAGS_max_message_bytes) == -1 ? -1 : 1},
      {"max_grids_per_client", absl::GetFlag(FLAGS_max_grids_per_client), 1},
      {"max_curve_trunks", absl::GetFlag(FLAGS_max_curve_trunks), 2},
      {"curve_concurrent_grids", absl::GetFlag(FLAGS_curve_concurrent_grids), 1},
      {"max_outbox_mb", absl::GetFlag(FLAGS_max_outbox_mb), 1},
      {"max_write_stall_s", absl::GetFlag(FLAGS_max_write_stall_s), 1},
      {"http_max_connections", absl::GetFlag(FLAGS_http_max_connections), 1},
      {"http_max_connections_per_client", absl::GetFlag(FLAGS_http_max_connections_per_client), 1},
      {"http_head_timeout_s", absl::GetFlag(FLAGS_http_head_timeout_s), 1}};
  for (const Range& r : ranges) {
    if (r.value < r.least) {
      std::cerr << "dgrid-orchestrator: --" << r.flag << " must be at least " << r.least
                << ", got " << r.value << "\n";
      return 1;
    }
    if (r.value > r.most) {
      std::cerr << "dgrid-orchestrator: --" << r.flag << " must be at most " << r.most
                << ", got " << r.value << "\n";
      return 1;
    }
  }
  const std::tuple<std::string, const char*, std::string*> token_files[] = {
      {absl::GetFlag(FLAGS_auth_token_file), "--auth_token_file", &o.auth_token},
      {absl::GetFlag(FLAGS_denoiser_token_file), "--denoiser_token_file", &o.denoiser_token}};
  for (const auto& [path, flag, token] : token_files) {
    auto read = dgrid::ReadTokenFile(path, flag);
    if (!read.ok()) {
      std::cerr << "dgrid-orchestrator: " << read.status().message() << "\n";
      return 1;
    }
    *token = *read;
  }


  auto server = dgrid::OrchestratorServer::Start(o);
  if (!server.ok()) {
    std::cerr << "dgrid-orchestrator: " << server.status().message() << "\n";
    return 1;
  }
  std::cerr << "dgrid-orchestrator: serving on port " << (*server)->port() << " over "
            << o.denoisers;
  if ((*server)->metrics_port()) std::cerr << ", metrics on port " << (*server)->metrics_port();
  if ((*server)->http_port()) std::cerr << ", HTTP on port " << (*server)->http_port();
  std::cerr << std::endl;
  if (absl::Status written = dgrid::WritePortFile(
          absl::GetFlag(FLAGS_port_file), {{"grpc", (*server)->port()},
                                           {"metrics", (*server)->metrics_port()},
                                           {"http", (*server)->http_port()}});
      !written.ok()) {
    std::cerr << "dgrid-orchestrator: " << written.message() << "\n";
    (*server)->Shutdown(absl::ZeroDuration());
    return 1;
  }
  dgrid::WaitForStopSignal(stop_signals);
  std::cerr << "dgrid-orchestrator: shutting down" << std::endl;
  (*server)->Shutdown(absl::Seconds(absl::GetFlag(FLAGS_shutdown_grace_s)));
  return 0;
}
