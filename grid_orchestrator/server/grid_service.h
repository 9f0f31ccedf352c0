// The orchestrator's API behind any transport: authentication, admission
// (global and per-client bounds), planning and execution. The gRPC service
// and the HTTP gateway both adapt to it, so both get the same limits, token
// and behaviour.
//
//   GridService service(&pool, &executor, &metrics, limits, token);
//   Caller caller{.client = "ipv4:127.0.0.1", .authorization = "Bearer ..."};
//   ASSIGN_OR_RETURN(v1::Grid grid, service.RunGrid(caller, request, sink, &cancel));
#ifndef DGRID_GRID_ORCHESTRATOR_SERVER_GRID_SERVICE_H_
#define DGRID_GRID_ORCHESTRATOR_SERVER_GRID_SERVICE_H_

#include <atomic>
#include <functional>
#include <map>
#include <string>

#include "absl/synchronization/mutex.h"
#include "dgrid/v1/orchestrator.pb.h"
#include "grid_orchestrator/execute/grid_executor.h"
#include "grid_orchestrator/plan/grid_plan.h"
#include "grid_orchestrator/pool/replica_pool.h"

namespace dgrid {

class OrchestratorMetrics;

struct OrchestratorLimits {
  PlanLimits plan;
  int max_concurrent_grids = 64;
  // Grids in flight from one client address.
  int max_grids_per_client = 16;
  absl::Duration default_grid_timeout = absl::Seconds(300);
};

// Who is calling, whatever the transport.
struct Caller {
  // The client's address without its port: the unit of the per-client limit.
  std::string client;
  // The "authorization" header or metadata, if any.
  std::string authorization;
  absl::Time deadline = absl::InfiniteFuture();
  // True once the client went away; polled while the grid runs.
  std::function<bool()> gone = [] { return false; };
};

class GridService {
 public:
  // `auth_token`, when not empty, must come as "Bearer <token>".
  GridService(ReplicaPool* pool, GridExecutor* executor, OrchestratorMetrics* metrics,
              OrchestratorLimits limits, std::string auth_token);

  absl::Status Authenticate(const Caller& caller) const;
  // Admits, plans and runs one grid; `sink` gets every event but the grid.
  absl::StatusOr<v1::Grid> RunGrid(const Caller& caller, const v1::GridRequest& request,
                                   const GridExecutor::EventSink& sink, GridCancel* cancel);
  absl::StatusOr<v1::ListModelsResponse> ListModels(const Caller& caller);

 private:
  absl::StatusOr<GridPlanSpec> Plan(const v1::GridRequest& request);

  ReplicaPool* const pool_;
  GridExecutor* const executor_;
  OrchestratorMetrics* const metrics_;
  const OrchestratorLimits limits_;
  const std::string auth_token_;
  std::atomic<int> grids_in_flight_{0};
  absl::Mutex clients_mu_;
  std::map<std::string, int> grids_per_client_ ABSL_GUARDED_BY(clients_mu_);
};

}  // namespace dgrid

#endif  // DGRID_GRID_ORCHESTRATOR_SERVER_GRID_SERVICE_H_
