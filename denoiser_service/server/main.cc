// dgrid-denoiser: serves model bundles over gRPC. Parses flags, starts the
// server, waits for SIGINT/SIGTERM, shuts down gracefully.
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "common/server_main.h"
#include "common/tls.h"
#include "denoiser_service/server/denoiser_server.h"

ABSL_FLAG(std::vector<std::string>, model_dir,
          (std::vector<std::string>{"models/emoji", "models/fashion-mnist"}),
          "Model bundle folders, comma-separated or the flag repeated; a folder without a "
          "manifest.json holds bundles. The first is the default model of requests that "
          "name none.");
ABSL_FLAG(std::string, listen, "127.0.0.1:50051",
          "gRPC listen address; port 0 picks one. Loopback unless told otherwise: a replica "
          "trusts the fairness ranks its callers claim, so only the orchestrator should reach "
          "it (see --auth_token_file).");
ABSL_FLAG(std::string, metrics_addr, "0.0.0.0:9091",
          "Prometheus metrics address, which also answers GET /healthz (200 serving, 503 "
          "loading or stopping); empty disables both.");
ABSL_FLAG(std::string, port_file, "",
          "If set, write 'grpc=PORT' and 'metrics=PORT' lines here once serving.");
ABSL_FLAG(int, max_batch, 64, "Forward rows per engine iteration.");
ABSL_FLAG(int, max_queue, 4096,
          "Trajectories admitted at once, for each model a replica serves; past it requests "
          "get RESOURCE_EXHAUSTED.");
ABSL_FLAG(int, max_trajectories_per_request, 256, "Trajectories in one request.");
ABSL_FLAG(int, max_message_bytes, 16 << 20, "gRPC message size limit, both directions.");
ABSL_FLAG(int, threads, 0, "Cores to use: torch's intra-op threads, shared among a pass's parallel chunks on a CPU; 0 = one per core.");
ABSL_FLAG(int, min_chunk_rows, 1,
          "A pass of at least twice this many rows runs as parallel chunks, the threads shared "
          "out among them; 0 = every pass whole.");
ABSL_FLAG(std::string, device, "auto", "auto, cpu or cuda.");
ABSL_FLAG(int, max_connection_age_s, 0,
          "Close client connections after this many seconds so they re-resolve; 0 = never.");
ABSL_FLAG(int, max_connection_age_grace_s, 330,
          "How long calls under way on a connection past --max_connection_age_s may still run "
          "before they are cut; keep it above the orchestrator's --grid_timeout_s.");
ABSL_FLAG(int, max_write_stall_s, 20,
          "A Branch stream whose client takes no event for this long is ended (an unread "
          "stream would hold a server thread and its events).");
ABSL_FLAG(int, shutdown_grace_s, 5,
          "On SIGTERM or SIGINT, how long calls under way may go on before they are cancelled "
          "(the orchestrator runs their work again elsewhere); keep it below the pod's "
          "terminationGracePeriodSeconds minus its preStop sleep.");
ABSL_FLAG(int, debug_step_delay_ms, 0, "Test only: sleep before every forward pass.");
ABSL_FLAG(std::string, tls_cert, "", "PEM server certificate (enables TLS).");
ABSL_FLAG(std::string, tls_key, "", "PEM server private key.");
ABSL_FLAG(std::string, tls_client_ca, "", "PEM CA: require and verify client certificates.");
ABSL_FLAG(std::string, auth_token_file, "",
          "File holding the bearer token every Denoiser call must carry (the orchestrator's "
          "--denoiser_token_file); empty = no token.");

namespace {

// absl keeps the last of a repeated flag; --model_dir may be given once per
// bundle as well as comma-separated, so every occurrence is collected here.
std::vector<std::string> AllModelDirs(int argc, char** argv) {
  std::vector<std::string> dirs;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") break;
    if (!absl::ConsumePrefix(&arg, "--") && !absl::ConsumePrefix(&arg, "-")) continue;
    absl::string_view value;
    if (absl::ConsumePrefix(&arg, "model_dir=")) {
      value = arg;
    } else if (arg == "model_dir" && i + 1 < argc) {
      value = argv[++i];
    } else {
      continue;
    }
    for (absl::string_view dir : absl::StrSplit(value, ',', absl::SkipEmpty())) {
      dirs.emplace_back(dir);
    }
  }
  return dirs;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "dgrid-denoiser --model_dir=models/emoji --model_dir=models/fashion-mnist");
  dgrid::HelpListsTheProgramsFlags();
  absl::ParseCommandLine(argc, argv);
  const sigset_t stop_signals = dgrid::BlockStopSignals();

  dgrid::DenoiserServerOptions options;
  options.model_dirs = AllModelDirs(argc, argv);
  if (options.model_dirs.empty()) options.model_dirs = absl::GetFlag(FLAGS_model_dir);
  options.listen = absl::GetFlag(FLAGS_listen);
  options.metrics_addr = absl::GetFlag(FLAGS_metrics_addr);
  options.max_batch = absl::GetFlag(FLAGS_max_batch);
  options.max_queue = absl::GetFlag(FLAGS_max_queue);
  options.max_trajectories_per_request = absl::GetFlag(FLAGS_max_trajectories_per_request);
  options.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  options.threads = absl::GetFlag(FLAGS_threads);
  options.min_chunk_rows = absl::GetFlag(FLAGS_min_chunk_rows);
  options.device = absl::GetFlag(FLAGS_device);
  options.max_connection_age = absl::Seconds(absl::GetFlag(FLAGS_max_connection_age_s));
  options.max_connection_age_grace =
      absl::Seconds(absl::GetFlag(FLAGS_max_connection_age_grace_s));
  options.max_write_stall = absl::Seconds(absl::GetFlag(FLAGS_max_write_stall_s));
  options.debug_step_delay = absl::Milliseconds(absl::GetFlag(FLAGS_debug_step_delay_ms));
  options.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  options.tls_key = absl::GetFlag(FLAGS_tls_key);
  options.tls_client_ca = absl::GetFlag(FLAGS_tls_client_ca);
  {
    auto token = dgrid::ReadTokenFile(absl::GetFlag(FLAGS_auth_token_file), "--auth_token_file");
    if (!token.ok()) {
      std::cerr << "dgrid-denoiser: " << token.status().message() << "\n";
      return 1;
    }
    options.auth_token = *token;
  }


  if (absl::GetFlag(FLAGS_shutdown_grace_s) < 0) {
    std::cerr << "dgrid-denoiser: --shutdown_grace_s must be >= 0\n";
    return 1;
  }
  auto server = dgrid::DenoiserServer::Start(options);
  if (!server.ok()) {
    std::cerr << "dgrid-denoiser: " << server.status().message() << "\n";
    return 1;
  }
  std::cerr << "dgrid-denoiser: serving";
  for (const std::string& name : (*server)->model_names()) std::cerr << " " << name;
  std::cerr << " on port " << (*server)->port();
  if ((*server)->metrics_port()) std::cerr << ", metrics on port " << (*server)->metrics_port();
  std::cerr << std::endl;
  if (absl::Status written = dgrid::WritePortFile(
          absl::GetFlag(FLAGS_port_file),
          {{"grpc", (*server)->port()}, {"metrics", (*server)->metrics_port()}});
      !written.ok()) {
    std::cerr << "dgrid-denoiser: " << written.message() << "\n";
    (*server)->Shutdown(absl::ZeroDuration());
    return 1;
  }
  dgrid::WaitForStopSignal(stop_signals);
  std::cerr << "dgrid-denoiser: shutting down" << std::endl;
  (*server)->Shutdown(absl::Seconds(absl::GetFlag(FLAGS_shutdown_grace_s)));
  return 0;
}
