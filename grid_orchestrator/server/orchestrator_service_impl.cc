#include "grid_orchestrator/server/orchestrator_service_impl.h"

#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
#include "common/grpc_status.h"
#include "grid_orchestrator/metrics/orchestrator_metrics.h"

namespace dgrid {
namespace {

const char* Outcome(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return "ok";
    case absl::StatusCode::kCancelled:
      return "cancelled";
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kResourceExhausted:
      return "rejected";
    default:
      return "failed";
  }
}

// Cancels the grid when the client goes away, polling because sync handlers
// get no callback for it.
class CancelWatcher {
 public:
  CancelWatcher(grpc::ServerContext* context, GridCancel* cancel)
      : thread_([this, context, cancel] {
          while (!done_.WaitForNotificationWithTimeout(absl::Milliseconds(25))) {
            if (context->IsCancelled()) {
              cancel->Cancel();
              return;
            }
          }
        }) {}
  ~CancelWatcher() {
    done_.Notify();
    thread_.join();
  }

 private:
  absl::Notification done_;
  std::thread thread_;
};

// The client's address without its port: the unit of the per-client limit.
std::string ClientOf(const grpc::ServerContext& context) {
  const std::string peer = context.peer();
  const size_t colon = peer.rfind(':');
  return colon == std::string::npos ? peer : peer.substr(0, colon);
}

// Compares in time independent of where the strings differ.
bool ConstantTimeEquals(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= a[i] ^ b[i % std::max<size_t>(b.size(), 1)];
  return diff == 0;
}

}  // namespace

OrchestratorServiceImpl::OrchestratorServiceImpl(ReplicaPool* pool, GridExecutor* executor,
                                                 OrchestratorMetrics* metrics,
                                                 OrchestratorLimits limits,
                                                 std::string auth_token)
    : pool_(pool),
      executor_(executor),
      metrics_(metrics),
      limits_(limits),
      auth_token_(std::move(auth_token)) {}

absl::Status OrchestratorServiceImpl::Authenticate(const grpc::ServerContext& context) const {
  if (auth_token_.empty()) return absl::OkStatus();
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) {
    return absl::UnauthenticatedError("missing \"authorization: Bearer <token>\" metadata");
  }
  const std::string given(it->second.data(), it->second.size());
  // The token itself is never logged or echoed.
  if (!ConstantTimeEquals(given, "Bearer " + auth_token_)) {
    return absl::UnauthenticatedError("invalid bearer token");
  }
  return absl::OkStatus();
}

absl::StatusOr<GridPlanSpec> OrchestratorServiceImpl::Plan(const v1::GridRequest& request) {
  absl::StatusOr<v1::GetModelInfoResponse> models = pool_->Models();
  if (!models.ok()) return models.status();
  if (models->models_size() == 0) return absl::UnavailableError("the denoisers serve no model");
  const v1::ModelInfo* model = &models->models(0);
  if (!request.model().empty()) {
    model = nullptr;
    std::vector<std::string> names;
    for (const v1::ModelInfo& m : models->models()) {
      names.push_back(m.name());
      if (m.name() == request.model()) model = &m;
    }
    if (!model) {
      return absl::InvalidArgumentError(absl::StrCat("model: unknown model \"", request.model(),
                                                     "\"; served: ", absl::StrJoin(names, ", ")));
    }
  }
  return PlanGrid(request, *model, limits_.plan);
}

absl::StatusOr<v1::Grid> OrchestratorServiceImpl::RunGrid(grpc::ServerContext* context,
                                                          const v1::GridRequest& request,
                                                          const GridExecutor::EventSink& sink,
                                                          GridCancel* cancel) {
  const absl::Time start = absl::Now();
  if (absl::Status auth = Authenticate(*context); !auth.ok()) return auth;
  // Admission: past the bounds, refuse rather than queue without limit.
  const std::string client = ClientOf(*context);
  {
    absl::MutexLock lock(&clients_mu_);
    int& mine = grids_per_client_[client];
    if (mine >= limits_.max_grids_per_client) {
      if (metrics_) metrics_->CountGrid("rejected", 0);
      return absl::ResourceExhaustedError(
          absl::StrCat("too many grids in flight from this client (limit ",
                       limits_.max_grids_per_client, "); retry later"));
    }
    ++mine;
  }
  auto release_client = [&] {
    absl::MutexLock lock(&clients_mu_);
    if (--grids_per_client_[client] == 0) grids_per_client_.erase(client);
  };
  if (grids_in_flight_.fetch_add(1) >= limits_.max_concurrent_grids) {
    grids_in_flight_.fetch_sub(1);
    release_client();
    absl::Status busy = absl::ResourceExhaustedError(
        absl::StrCat("too many grids in flight (limit ", limits_.max_concurrent_grids,
                     "); retry later"));
    if (metrics_) metrics_->CountGrid(Outcome(busy), 0);
    return busy;
  }
  absl::StatusOr<v1::Grid> grid = [&]() -> absl::StatusOr<v1::Grid> {
    absl::StatusOr<GridPlanSpec> plan = Plan(request);
    if (!plan.ok()) return plan.status();
    absl::Time deadline = absl::Now() + limits_.default_grid_timeout;
    if (context->deadline() != std::chrono::system_clock::time_point::max()) {
      deadline = std::min(deadline, absl::FromChrono(context->deadline()));
    }
    CancelWatcher watcher(context, cancel);
    return executor_->Run(*plan, deadline, sink, cancel);
  }();
  grids_in_flight_.fetch_sub(1);
  release_client();
  if (metrics_) {
    metrics_->CountGrid(Outcome(grid.status()), absl::ToDoubleSeconds(absl::Now() - start));
  }
  return grid;
}

grpc::Status OrchestratorServiceImpl::CreateGrid(grpc::ServerContext* context,
                                                 const v1::GridRequest* request,
                                                 v1::Grid* response) {
  GridCancel cancel;
  absl::StatusOr<v1::Grid> grid =
      RunGrid(context, *request, [](const v1::GridEvent&) {}, &cancel);
  if (!grid.ok()) return ToGrpcStatus(grid.status());
  *response = std::move(*grid);
  return grpc::Status::OK;
}

grpc::Status OrchestratorServiceImpl::StreamGrid(grpc::ServerContext* context,
                                                 const v1::GridRequest* request,
                                                 grpc::ServerWriter<v1::GridEvent>* writer) {
  GridCancel cancel;
  auto sink = [&](const v1::GridEvent& event) {
    // A failed write means the client is gone: stop the grid's work.
    if (!writer->Write(event)) cancel.Cancel();
  };
  absl::StatusOr<v1::Grid> grid = RunGrid(context, *request, sink, &cancel);
  if (!grid.ok()) return ToGrpcStatus(grid.status());
  v1::GridEvent last;
  *last.mutable_grid() = std::move(*grid);
  writer->Write(last);
  return grpc::Status::OK;
}

grpc::Status OrchestratorServiceImpl::ListModels(grpc::ServerContext* context,
                                                 const v1::ListModelsRequest*,
                                                 v1::ListModelsResponse* response) {
  if (absl::Status auth = Authenticate(*context); !auth.ok()) return ToGrpcStatus(auth);
  absl::StatusOr<v1::GetModelInfoResponse> models = pool_->Models();
  if (!models.ok()) return ToGrpcStatus(models.status());
  *response->mutable_models() = models->models();
  return grpc::Status::OK;
}

}  // namespace dgrid
