#include "grid_orchestrator/server/orchestrator_service_impl.h"

#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "common/client_key.h"
#include "common/grpc_status.h"

namespace dgrid {
OrchestratorServiceImpl::OrchestratorServiceImpl(GridService* service, CurveService* curves,
                                                 int64_t max_message_bytes)
    : RequestParsingService(v1::Orchestrator::service_full_name()),
      service_(service),
      curves_(curves),
      max_message_bytes_(max_message_bytes) {
  AddUnary("CreateGrid", &OrchestratorServiceImpl::CreateGrid);
  AddServerStreaming("StreamGrid", &OrchestratorServiceImpl::StreamGrid);
  AddUnary("ListModels", &OrchestratorServiceImpl::ListModels);
  AddServerStreaming("DecisionCurve", &OrchestratorServiceImpl::DecisionCurve);
}

namespace {

// The call's "authorization" header, or "".
std::string AuthorizationOf(const grpc::ServerContext& context) {
  const auto& metadata = context.client_metadata();
  const auto it = metadata.find("authorization");
  return it == metadata.end() ? std::string() : std::string(it->second.data(), it->second.size());
}

}  // namespace

grpc::Status OrchestratorServiceImpl::Admit(const char* method,
                                            const grpc::ServerContext& context) {
  // The token check reads one; a proxy in front may read another.
  if (const size_t n = context.client_metadata().count("authorization"); n > 1) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        absl::StrCat("authorization: given ", n, " times"));
  }
  Caller caller;
  caller.authorization = AuthorizationOf(context);
  return ToGrpcStatus(service_->Authenticate(caller));
}

void OrchestratorServiceImpl::Refused(const char* method, const grpc::Status& status) {
  const std::string_view name = method;
  if (name == "CreateGrid" || name == "StreamGrid") {
    service_->CountRefusal(FromGrpcStatus(status));
  } else if (name == "DecisionCurve" && curves_) {
    curves_->CountRefusal(FromGrpcStatus(status));
  }
}

void OrchestratorServiceImpl::EndCallsAt(absl::Time end) {
  const int64_t ns = absl::ToUnixNanos(end);
  if (ns < calls_end_ns_.load()) calls_end_ns_.store(ns);
}

Caller OrchestratorServiceImpl::CallerOf(grpc::ServerContext* context) const {
  Caller caller;
  caller.client = ClientKey(context->peer());
  caller.authorization = AuthorizationOf(*context);
  if (context->deadline() != std::chrono::system_clock::time_point::max()) {
    caller.deadline = absl::FromChrono(context->deadline());
  }
  // A call still running when the server stops ends as if its client had
  // gone (Failure says why).
  caller.gone = [this, context] { return context->IsCancelled() || Stopping(); };
  caller.abort = [context] { context->TryCancel(); };
  return caller;
}

grpc::Status OrchestratorServiceImpl::Failure(const absl::Status& status) const {
  if (status.code() == absl::StatusCode::kCancelled && Stopping()) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is shutting down; run it again");
  }
  return ToGrpcStatus(status);
}

grpc::Status OrchestratorServiceImpl::CreateGrid(grpc::ServerContext* context,
                                                 const v1::GridRequest* request,
                                                 v1::Grid* response) {
  GridCancel cancel;
  Caller caller = CallerOf(context);
  caller.max_answer_bytes = max_message_bytes_;  // the grid is the answer
  absl::StatusOr<v1::Grid> grid =
      service_->RunGrid(caller, *request, [](const v1::GridEvent&) { return true; }, &cancel,
                        /*stream_grid=*/false);
  if (!grid.ok()) return Failure(grid.status());
  *response = std::move(*grid);
  return grpc::Status::OK;
}

grpc::Status OrchestratorServiceImpl::StreamGrid(grpc::ServerContext* context,
                                                 const v1::GridRequest* request,
                                                 grpc::ServerWriter<v1::GridEvent>* writer) {
  GridCancel cancel;
  // A failed write means the client is gone.
  auto sink = [writer](const v1::GridEvent& event) { return writer->Write(event); };
  Caller caller = CallerOf(context);
  caller.max_answer_bytes = max_message_bytes_;  // each event, the grid last
  absl::StatusOr<v1::Grid> grid =
      service_->RunGrid(caller, *request, sink, &cancel, /*stream_grid=*/true);
  if (!grid.ok()) return Failure(grid.status());
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

grpc::Status OrchestratorServiceImpl::DecisionCurve(grpc::ServerContext* context,
                                                    const v1::CurveRequest* request,
                                                    grpc::ServerWriter<v1::CurveEvent>* writer) {
  // A failed write means the client is gone.
  auto sink = [writer](const v1::CurveEvent& event) { return writer->Write(event); };
  absl::StatusOr<v1::CurveResult> curve = curves_->RunCurve(CallerOf(context), *request, sink);
  if (!curve.ok()) return Failure(curve.status());
  return grpc::Status::OK;
}

}  // namespace dgrid
