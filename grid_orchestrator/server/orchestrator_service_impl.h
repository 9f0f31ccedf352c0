// The gRPC adapter of the orchestrator: each handler turns its
// ServerContext into a Caller, calls GridService and encodes the answer.
#ifndef DGRID_GRID_ORCHESTRATOR_SERVER_ORCHESTRATOR_SERVICE_IMPL_H_
#define DGRID_GRID_ORCHESTRATOR_SERVER_ORCHESTRATOR_SERVICE_IMPL_H_

#include "dgrid/v1/orchestrator.grpc.pb.h"
#include "grid_orchestrator/server/grid_service.h"

namespace dgrid {

class OrchestratorServiceImpl final : public v1::Orchestrator::Service {
 public:
  explicit OrchestratorServiceImpl(GridService* service);

  grpc::Status CreateGrid(grpc::ServerContext* context, const v1::GridRequest* request,
                          v1::Grid* response) override;
  grpc::Status StreamGrid(grpc::ServerContext* context, const v1::GridRequest* request,
                          grpc::ServerWriter<v1::GridEvent>* writer) override;
  grpc::Status ListModels(grpc::ServerContext* context, const v1::ListModelsRequest* request,
                          v1::ListModelsResponse* response) override;

 private:
  GridService* const service_;
};

}  // namespace dgrid

#endif  // DGRID_GRID_ORCHESTRATOR_SERVER_ORCHESTRATOR_SERVICE_IMPL_H_
