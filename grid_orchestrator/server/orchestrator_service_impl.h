// The gRPC adapter of the orchestrator: each handler turns its
// ServerContext into a Caller, calls GridService (or CurveService) and
// encodes the answer.
// Requests that do not parse get INVALID_ARGUMENT naming the field (see
// common/request_parsing.h), before any handler runs.
#ifndef DGRID_GRID_ORCHESTRATOR_SERVER_ORCHESTRATOR_SERVICE_IMPL_H_
#define DGRID_GRID_ORCHESTRATOR_SERVER_ORCHESTRATOR_SERVICE_IMPL_H_

#include "common/request_parsing.h"
#include "dgrid/v1/orchestrator.grpc.pb.h"
#include "grid_orchestrator/server/curve_service.h"
#include "grid_orchestrator/server/grid_service.h"

namespace dgrid {

// Serves dgrid.v1.Orchestrator: the constructor adds each method.
class OrchestratorServiceImpl final : public RequestParsingService {
 public:
  OrchestratorServiceImpl(GridService* service, CurveService* curves);

  grpc::Status CreateGrid(grpc::ServerContext* context, const v1::GridRequest* request,
                          v1::Grid* response);
  grpc::Status StreamGrid(grpc::ServerContext* context, const v1::GridRequest* request,
                          grpc::ServerWriter<v1::GridEvent>* writer);
  grpc::Status ListModels(grpc::ServerContext* context, const v1::ListModelsRequest* request,
                          v1::ListModelsResponse* response);
  grpc::Status DecisionCurve(grpc::ServerContext* context, const v1::CurveRequest* request,
                             grpc::ServerWriter<v1::CurveEvent>* writer);

 private:
  GridService* const service_;
  CurveService* const curves_;
};

}  // namespace dgrid

#endif  // DGRID_GRID_ORCHESTRATOR_SERVER_ORCHESTRATOR_SERVICE_IMPL_H_
