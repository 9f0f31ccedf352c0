// The gRPC adapter of the orchestrator: admission, planning, execution and
// encoding, each delegated (plan/, execute/); handlers read like a table of
// contents.
#ifndef DGRID_GRID_ORCHESTRATOR_SERVER_ORCHESTRATOR_SERVICE_IMPL_H_
#define DGRID_GRID_ORCHESTRATOR_SERVER_ORCHESTRATOR_SERVICE_IMPL_H_

#include <atomic>
#include <map>
#include <string>

#include "absl/synchronization/mutex.h"

#include "dgrid/v1/orchestrator.grpc.pb.h"
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

class OrchestratorServiceImpl final : public v1::Orchestrator::Service {
 public:
  // `auth_token`, when not empty, must come as "authorization: Bearer <token>".
  OrchestratorServiceImpl(ReplicaPool* pool, GridExecutor* executor,
                          OrchestratorMetrics* metrics, OrchestratorLimits limits,
                          std::string auth_token);

  grpc::Status CreateGrid(grpc::ServerContext* context, const v1::GridRequest* request,
                          v1::Grid* response) override;
  grpc::Status StreamGrid(grpc::ServerContext* context, const v1::GridRequest* request,
                          grpc::ServerWriter<v1::GridEvent>* writer) override;
  grpc::Status ListModels(grpc::ServerContext* context, const v1::ListModelsRequest* request,
                          v1::ListModelsResponse* response) override;

 private:
  absl::Status Authenticate(const grpc::ServerContext& context) const;
  absl::StatusOr<GridPlanSpec> Plan(const v1::GridRequest& request);
  // Admits, plans and runs one grid; `sink` gets every event but the grid.
  absl::StatusOr<v1::Grid> RunGrid(grpc::ServerContext* context, const v1::GridRequest& request,
                                   const GridExecutor::EventSink& sink, GridCancel* cancel);

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

#endif  // DGRID_GRID_ORCHESTRATOR_SERVER_ORCHESTRATOR_SERVICE_IMPL_H_
