#include "grid_orchestrator/server/grid_service.h"

#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
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
    case absl::StatusCode::kUnauthenticated:
      return "rejected";
    default:
      return "failed";
  }
}

// Cancels the grid when the client goes away. Polls, because neither sync
// gRPC handlers nor HTTP handlers get a callback for it.
class CancelWatcher {
 public:
  CancelWatcher(const std::function<bool()>& gone, GridCancel* cancel)
      : thread_([this, &gone, cancel] {
          while (!done_.WaitForNotificationWithTimeout(absl::Milliseconds(25))) {
            if (gone()) {
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

// Compares in time independent of where the strings differ.
bool ConstantTimeEquals(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= a[i] ^ b[i];
  return diff == 0;
}

}  // namespace

GridService::GridService(ReplicaPool* pool, GridExecutor* executor, OrchestratorMetrics* metrics,
                         OrchestratorLimits limits, std::string auth_token)
    : pool_(pool),
      executor_(executor),
      metrics_(metrics),
      limits_(limits),
      auth_token_(std::move(auth_token)) {}

absl::Status GridService::Authenticate(const Caller& caller) const {
  if (auth_token_.empty()) return absl::OkStatus();
  if (caller.authorization.empty()) {
    return absl::UnauthenticatedError("missing \"authorization: Bearer <token>\"");
  }
  // The token itself is never logged or echoed.
  if (!ConstantTimeEquals(caller.authorization, "Bearer " + auth_token_)) {
    return absl::UnauthenticatedError("invalid bearer token");
  }
  return absl::OkStatus();
}

absl::StatusOr<GridPlanSpec> GridService::Plan(const v1::GridRequest& request) {
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

absl::StatusOr<v1::Grid> GridService::RunGrid(const Caller& caller,
                                              const v1::GridRequest& request,
                                              const GridExecutor::EventSink& sink,
                                              GridCancel* cancel) {
  const absl::Time start = absl::Now();
  if (absl::Status auth = Authenticate(caller); !auth.ok()) {
    if (metrics_) metrics_->CountGrid(Outcome(auth), 0);
    return auth;
  }
  // Admission: past the bounds, refuse rather than queue without limit.
  {
    absl::MutexLock lock(&clients_mu_);
    int& mine = grids_per_client_[caller.client];
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
    if (--grids_per_client_[caller.client] == 0) grids_per_client_.erase(caller.client);
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
    const absl::Time deadline =
        std::min(caller.deadline, absl::Now() + limits_.default_grid_timeout);
    CancelWatcher watcher(caller.gone, cancel);
    return executor_->Run(*plan, deadline, sink, cancel);
  }();
  grids_in_flight_.fetch_sub(1);
  release_client();
  if (metrics_) {
    metrics_->CountGrid(Outcome(grid.status()), absl::ToDoubleSeconds(absl::Now() - start));
  }
  return grid;
}

absl::StatusOr<v1::ListModelsResponse> GridService::ListModels(const Caller& caller) {
  if (absl::Status auth = Authenticate(caller); !auth.ok()) return auth;
  absl::StatusOr<v1::GetModelInfoResponse> models = pool_->Models();
  if (!models.ok()) return models.status();
  v1::ListModelsResponse response;
  *response.mutable_models() = models->models();
  return response;
}

}  // namespace dgrid
