#include "denoiser_service/server/denoiser_server.h"

#include <algorithm>
#include <filesystem>
#include <limits>
#include <system_error>

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <prometheus/registry.h>

#include "absl/strings/str_cat.h"
#include "common/grpc_server.h"
#include "common/status_macros.h"
#include "common/host_port.h"
#include "common/metrics_exposer.h"
#include "common/short_text.h"
#include "common/tls.h"
#include "denoiser_service/server/denoiser_metrics.h"
#include "denoiser_service/server/denoiser_service_impl.h"

namespace dgrid {

absl::StatusOr<std::vector<std::string>> ExpandModelDirs(const std::vector<std::string>& dirs) {
  std::vector<std::string> out;
  for (const std::string& dir : dirs) {
    std::error_code error;
    if (std::filesystem::exists(std::filesystem::path(dir) / "manifest.json", error) ||
        !std::filesystem::is_directory(dir, error)) {
      out.push_back(dir);  // a bundle, or a path whose error the loader names
      continue;
    }
    std::vector<std::string> bundles;
    for (const auto& entry : std::filesystem::directory_iterator(dir, error)) {
      if (std::filesystem::exists(entry.path() / "manifest.json", error)) {
        bundles.push_back(entry.path().string());
      }
    }
    if (bundles.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--model_dir ", dir, ": neither a bundle (no manifest.json) nor a folder of bundles"));
    }
    std::sort(bundles.begin(), bundles.end());
    out.insert(out.end(), bundles.begin(), bundles.end());
  }
  return out;
}

DenoiserServer::DenoiserServer() = default;

DenoiserServer::~DenoiserServer() { Shutdown(absl::ZeroDuration()); }

absl::StatusOr<std::unique_ptr<DenoiserServer>> DenoiserServer::Start(
    const DenoiserServerOptions& o) {
  if (o.model_dirs.empty()) return absl::InvalidArgumentError("--model_dir is required");
  if (absl::Status listen = CheckGrpcTarget("--listen", o.listen); !listen.ok()) return listen;
  if (o.max_batch < 1) return absl::InvalidArgumentError("--max_batch must be >= 1");
  if (o.max_write_stall < absl::Seconds(1)) {
    return absl::InvalidArgumentError("--max_write_stall_s must be >= 1");
  }
  if (o.max_queue < 1) return absl::InvalidArgumentError("--max_queue must be >= 1");
  // Step and Decode refuse an answer past it before the work; 0 or less
  // (no limit to gRPC) would refuse them all.
  if (o.max_message_bytes < 1) {
    return absl::InvalidArgumentError("--max_message_bytes must be >= 1");
  }
  // 0 or less would refuse every request as too many trajectories, a fault
  // of this server's that clients would be told is theirs.
  if (o.max_trajectories_per_request < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_trajectories_per_request must be >= 1, got ", o.max_trajectories_per_request));
  }
  if (o.threads < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--threads must be >= 0 (0: one per core), got ", o.threads));
  }
  if (o.min_chunk_rows < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--min_chunk_rows must be >= 0 (0: whole passes), got ", o.min_chunk_rows));
  }
  if (o.debug_step_delay < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--debug_step_delay_ms must be >= 0, got ",
                     absl::ToInt64Milliseconds(o.debug_step_delay)));
  }
  if (o.max_connection_age < absl::ZeroDuration() ||
      o.max_connection_age_grace < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "--max_connection_age_s and --max_connection_age_grace_s must be >= 0");
  }
  // A request the queue could never hold would be refused as RESOURCE_EXHAUSTED,
  // which callers retry on every replica.
  if (o.max_queue < o.max_trajectories_per_request) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_queue (", o.max_queue, ") must be at least --max_trajectories_per_request (",
        o.max_trajectories_per_request, ")"));
  }
  auto credentials = ServerCredentialsFromFiles({o.tls_cert, o.tls_key, o.tls_client_ca});
  if (!credentials.ok()) return credentials.status();

  std::unique_ptr<DenoiserServer> s(new DenoiserServer());
  const int cores = SetTorchThreads(
      o.threads > 0 ? o.threads : static_cast<int>(std::thread::hardware_concurrency()));
  s->registry_ = std::make_shared<prometheus::Registry>();
  s->denoiser_metrics_ = std::make_unique<DenoiserMetrics>(*s->registry_);
  // Metrics before the bundles: loading a large model takes minutes on a
  // GPU, and a replica that Prometheus cannot scrape meanwhile reads as
  // down (dgrid_denoiser_ready says it is loading).
  if (!o.metrics_addr.empty()) {
    auto endpoint = MetricsEndpoint::Start(o.metrics_addr, s->registry_,
                                           [serving = s->serving_] { return serving->load(); });
    if (!endpoint.ok()) return endpoint.status();
    s->metrics_ = std::move(*endpoint);
  }
  s->models_ = std::make_unique<std::map<std::string, ServedModel>>();
  absl::StatusOr<std::vector<std::string>> dirs = ExpandModelDirs(o.model_dirs);
  if (!dirs.ok()) return dirs.status();
  std::map<std::string, std::string> dir_of;  // a name's bundle folder
  for (const std::string& dir : *dirs) {
    auto model = DenoiserModel::Load(dir, {o.device});
    if (!model.ok()) return model.status();
    const std::string name = (*model)->manifest().name;
    if (s->models_->count(name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "two bundles are named ", ShortQuote(name), ": ", dir_of[name], " and ", dir,
          dir_of[name] == dir ? " (the same folder given twice)" : ""));
    }
    dir_of[name] = dir;
    ServedModel& served = (*s->models_)[name];
    served.order = static_cast<int>(s->models_->size()) - 1;
    served.model = std::move(*model);
    served.answer = AnswerSizesOf(served.model->manifest());
    if (served.model->manifest().judge.present()) {
      auto judge = ImageJudge::Load(dir, served.model->manifest(), served.model->device());
      if (!judge.ok()) return judge.status();
      served.judge = std::move(*judge);
    }
    TrajectoryBatcher::Options batcher;
    batcher.max_batch = o.max_batch;
    batcher.max_queue = o.max_queue;
    batcher.debug_step_delay = o.debug_step_delay;
    batcher.cores = cores;
    // Chunks share out CPU cores; a GPU runs a pass whole (one launch, its
    // own parallelism).
    batcher.min_chunk_rows = served.model->device() == "cpu" ? o.min_chunk_rows : 0;
    served.batcher =
        std::make_unique<TrajectoryBatcher>(served.model.get(), batcher, s->denoiser_metrics_.get());
  }
  s->service_ = std::make_unique<DenoiserServiceImpl>(
      s->models_.get(), o.max_trajectories_per_request, o.max_message_bytes,
      s->denoiser_metrics_.get(), o.auth_token);
  s->write_watch_ = std::make_unique<StallWatchdog>(o.max_write_stall);
  RETURN_IF_ERROR(s->write_watch_->Start());
  s->service_->WatchWrites(s->write_watch_.get());

  std::unique_ptr<grpc::ServerBuilder> builder = NewServerBuilder(
      o.listen, *credentials, &s->port_, o.max_message_bytes, "dgrid-denoiser");
  builder->RegisterService(s->service_.get());
  if (o.max_connection_age > absl::ZeroDuration()) {
    // gRPC takes int milliseconds: a longer age (24.8 days) is held there,
    // not wrapped round to a short one.
    const auto millis = [](absl::Duration d) {
      return static_cast<int>(
          std::min<int64_t>(absl::ToInt64Milliseconds(d), std::numeric_limits<int>::max()));
    };
    // Clients reconnect, and re-resolve a headless Service, after a scale-up.
    builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, millis(o.max_connection_age));
    builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                                millis(o.max_connection_age_grace));
  }
  s->server_ = builder->BuildAndStart();
  if (!s->server_ || s->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", o.listen, " (in use by another process?)"));
  }
  grpc::HealthCheckServiceInterface* health = s->server_->GetHealthCheckService();
  for (const auto& [name, _] : *s->models_) health->SetServingStatus(name, true);
  health->SetServingStatus("", true);
  // By the service's own name too, as the orchestrator answers to its own.
  health->SetServingStatus("dgrid.v1.Denoiser", true);
  s->denoiser_metrics_->SetReady(true);
  s->serving_->store(true);
  return s;
}

std::vector<std::string> DenoiserServer::model_names() const {
  // In --model_dir order, as GetModelInfo lists them: the first is the
  // default model.
  std::vector<std::pair<int, std::string>> ordered;
  for (const auto& [name, served] : *models_) ordered.emplace_back(served.order, name);
  std::sort(ordered.begin(), ordered.end());
  std::vector<std::string> names;
  for (auto& [_, name] : ordered) names.push_back(std::move(name));
  return names;
}

int DenoiserServer::metrics_port() const { return metrics_ ? metrics_->port() : 0; }

void DenoiserServer::Shutdown(absl::Duration grace) {
  if (!server_) return;
  serving_->store(false);
  denoiser_metrics_->SetReady(false);
  server_->GetHealthCheckService()->Shutdown();
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  server_.reset();
  // Batchers stop after the RPCs that wait on them have ended.
  models_.reset();
}

}  // namespace dgrid
