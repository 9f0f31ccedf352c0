// The gRPC adapter of the orchestrator: each handler turns its
// ServerContext into a Caller, calls GridService (or CurveService) and
// encodes the answer.
// Requests that do not parse get INVALID_ARGUMENT naming the field (see
// common/request_parsing.h), before any handler runs.
#ifndef DGRID_GRID_ORCHESTRATOR_SERVER_ORCHESTRATOR_SERVICE_IMPL_H_
#define DGRID_GRID_ORCHESTRATOR_SERVER_ORCHESTRATOR_SERVICE_IMPL_H_

#include <atomic>
#include <cstdint>
#include <limits>

#include "absl/time/time.h"
#include "common/request_parsing.h"
#include "dgrid/v1/orchestrator.grpc.pb.h"
#include "grid_orchestrator/server/curve_service.h"
#include "grid_orchestrator/server/grid_service.h"

namespace dgrid {

// Serves dgrid.v1.Orchestrator: the constructor adds each method.
class OrchestratorServiceImpl final : public RequestParsingService {
 public:
  // max_message_bytes: the server's gRPC message limit (-1: none), which a
  // finished grid is held to before it is sent (Caller::max_answer_bytes).
  OrchestratorServiceImpl(GridService* service, CurveService* curves,
                          int64_t max_message_bytes = -1);

  grpc::Status CreateGrid(grpc::ServerContext* context, const v1::GridRequest* request,
                          v1::Grid* response);
  grpc::Status StreamGrid(grpc::ServerContext* context, const v1::GridRequest* request,
                          grpc::ServerWriter<v1::GridEvent>* writer);
  grpc::Status ListModels(grpc::ServerContext* context, const v1::ListModelsRequest* request,
                          v1::ListModelsResponse* response);
  grpc::Status DecisionCurve(grpc::ServerContext* context, const v1::CurveRequest* request,
                             grpc::ServerWriter<v1::CurveEvent>* writer);

  // Shutting down: grids and curves still running at `end` stop, and end
  // with UNAVAILABLE "the server is shutting down", which reaches their
  // clients if `end` comes before gRPC cancels the calls itself.
  void EndCallsAt(absl::Time end);

  // The bearer token, checked before a request is parsed (a caller without
  // it learns nothing of what it sent); refusals and requests that do not
  // parse count as the grids' and curves' own refusals do.
  grpc::Status Admit(const char* method, const grpc::ServerContext& context) override;
  void Refused(const char* method, const grpc::Status& status) override;

 private:
  Caller CallerOf(grpc::ServerContext* context) const;
  bool Stopping() const { return absl::GetCurrentTimeNanos() > calls_end_ns_.load(); }
  // A call's failure as its client should read it.
  grpc::Status Failure(const absl::Status& status) const;

  GridService* const service_;
  CurveService* const curves_;
  const int64_t max_message_bytes_;
  std::atomic<int64_t> calls_end_ns_{std::numeric_limits<int64_t>::max()};
};

}  // namespace dgrid

#endif  // DGRID_GRID_ORCHESTRATOR_SERVER_ORCHESTRATOR_SERVICE_IMPL_H_
