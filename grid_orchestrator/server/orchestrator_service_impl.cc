#include "grid_orchestrator/server/orchestrator_service_impl.h"

#include "common/grpc_status.h"

namespace dgrid {
namespace {

Caller CallerOf(grpc::ServerContext* context) {
  Caller caller;
  const std::string peer = context->peer();
  const size_t colon = peer.rfind(':');
  caller.client = colon == std::string::npos ? peer : peer.substr(0, colon);
  const auto& metadata = context->client_metadata();
  if (auto it = metadata.find("authorization"); it != metadata.end()) {
    caller.authorization.assign(it->second.data(), it->second.size());
  }
  if (context->deadline() != std::chrono::system_clock::time_point::max()) {
    caller.deadline = absl::FromChrono(context->deadline());
  }
  caller.gone = [context] { return context->IsCancelled(); };
  return caller;
}

}  // namespace

OrchestratorServiceImpl::OrchestratorServiceImpl(GridService* service) : service_(service) {}

grpc::Status OrchestratorServiceImpl::CreateGrid(grpc::ServerContext* context,
                                                 const v1::GridRequest* request,
                                                 v1::Grid* response) {
  GridCancel cancel;
  absl::StatusOr<v1::Grid> grid =
      service_->RunGrid(CallerOf(context), *request, [](const v1::GridEvent&) {}, &cancel);
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
  absl::StatusOr<v1::Grid> grid = service_->RunGrid(CallerOf(context), *request, sink, &cancel);
  if (!grid.ok()) return ToGrpcStatus(grid.status());
  v1::GridEvent last;
  *last.mutable_grid() = std::move(*grid);
  writer->Write(last);
  return grpc::Status::OK;
}

grpc::Status OrchestratorServiceImpl::ListModels(grpc::ServerContext* context,
                                                 const v1::ListModelsRequest*,
                                                 v1::ListModelsResponse* response) {
  absl::StatusOr<v1::ListModelsResponse> models = service_->ListModels(CallerOf(context));
  if (!models.ok()) return ToGrpcStatus(models.status());
  *response = std::move(*models);
  return grpc::Status::OK;
}

}  // namespace dgrid
