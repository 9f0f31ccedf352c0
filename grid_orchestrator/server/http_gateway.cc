#include "grid_orchestrator/server/http_gateway.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "httplib.h"

namespace dgrid {
namespace {

int HttpStatusFor(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kCancelled:
      return 499;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

std::string ToJson(const google::protobuf::Message& message) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  google::protobuf::util::MessageToJsonString(message, &json, options);
  return json;
}

// {"code": "INVALID_ARGUMENT", "message": "..."}, built through the JSON
// mapping of google.protobuf.Struct rather than by hand.
std::string ErrorJson(const absl::Status& status) {
  google::protobuf::Struct error;
  (*error.mutable_fields())["code"].set_string_value(
      std::string(absl::StatusCodeToString(status.code())));
  (*error.mutable_fields())["message"].set_string_value(std::string(status.message()));
  return ToJson(error);
}

void SendError(httplib::Response& response, const absl::Status& status) {
  response.status = HttpStatusFor(status.code());
  response.set_content(ErrorJson(status), "application/json");
}

absl::Status ParseRequest(const std::string& json, v1::GridRequest* request) {
  if (json.empty()) return absl::OkStatus();  // all defaults
  const auto status = google::protobuf::util::JsonStringToMessage(json, request);
  if (!status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("request body: ", std::string(status.message())));
  }
  return absl::OkStatus();
}

Caller CallerOf(const httplib::Request& request) {
  Caller caller;
  caller.client = request.remote_addr;
  caller.authorization = request.get_header_value("Authorization");
  return caller;
}

std::string SseEvent(const std::string& name, const std::string& data) {
  return absl::StrCat("event: ", name, "\ndata: ", data, "\n\n");
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpGateway>> HttpGateway::Start(const HttpGatewayOptions& o,
                                                                 GridService* service) {
  auto gateway = std::unique_ptr<HttpGateway>(new HttpGateway());
  if (!o.tls.cert.empty() || !o.tls.key.empty()) {
    if (o.tls.cert.empty() || o.tls.key.empty()) {
      return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
    }
    auto server = std::make_unique<httplib::SSLServer>(
        o.tls.cert.c_str(), o.tls.key.c_str(),
        o.tls.client_ca.empty() ? nullptr : o.tls.client_ca.c_str());
    if (!server->is_valid()) {
      return absl::InvalidArgumentError("--tls_cert/--tls_key: cannot set up HTTPS");
    }
    gateway->server_ = std::move(server);
  } else {
    gateway->server_ = std::make_unique<httplib::Server>();
  }
  httplib::Server& server = *gateway->server_;
  // Each open grid stream holds a worker; keep enough for the grid limits.
  server.new_task_queue = [] { return new httplib::ThreadPool(64); };
  server.set_payload_max_length(o.max_body_bytes);
  server.set_read_timeout(30, 0);
  server.set_write_timeout(30, 0);
  if (!o.web_dir.empty() && !server.set_mount_point("/", o.web_dir)) {
    return absl::InvalidArgumentError(absl::StrCat("--web_dir: no folder at ", o.web_dir));
  }

  server.Get("/healthz", [](const httplib::Request&, httplib::Response& response) {
    response.set_content("ok\n", "text/plain");
  });
  server.Get("/api/v1/models", [service](const httplib::Request& request,
                                         httplib::Response& response) {
    absl::StatusOr<v1::ListModelsResponse> models = service->ListModels(CallerOf(request));
    if (!models.ok()) return SendError(response, models.status());
    response.set_content(ToJson(*models), "application/json");
  });
  server.Post("/api/v1/grid", [service](const httplib::Request& request,
                                        httplib::Response& response) {
    v1::GridRequest grid_request;
    if (absl::Status parsed = ParseRequest(request.body, &grid_request); !parsed.ok()) {
      return SendError(response, parsed);
    }
    GridCancel cancel;
    absl::StatusOr<v1::Grid> grid =
        service->RunGrid(CallerOf(request), grid_request, [](const v1::GridEvent&) {}, &cancel);
    if (!grid.ok()) return SendError(response, grid.status());
    response.set_content(ToJson(*grid), "application/json");
  });

  auto stream = [service](const httplib::Request& request, httplib::Response& response) {
    v1::GridRequest grid_request;
    const std::string json =
        request.method == "GET" ? request.get_param_value("request") : request.body;
    if (absl::Status parsed = ParseRequest(json, &grid_request); !parsed.ok()) {
      return SendError(response, parsed);
    }
    Caller caller = CallerOf(request);
    // Refuse before the stream starts, with a proper HTTP status.
    if (absl::Status auth = service->Authenticate(caller); !auth.ok()) {
      return SendError(response, auth);
    }
    response.set_header("Cache-Control", "no-cache");
    response.set_chunked_content_provider(
        "text/event-stream",
        [service, caller, grid_request](size_t, httplib::DataSink& sink) mutable {
          GridCancel cancel;
          caller.gone = [&sink] { return !sink.is_writable(); };
          auto send = [&](const std::string& name, const std::string& data) {
            const std::string event = SseEvent(name, data);
            if (!sink.write(event.data(), event.size())) cancel.Cancel();
          };
          auto sink_event = [&](const v1::GridEvent& event) {
            const char* name = event.has_plan()    ? "plan"
                               : event.has_trunk() ? "trunk"
                               : event.has_cell()  ? "cell"
                                                   : "grid";
            send(name, ToJson(event));
          };
          absl::StatusOr<v1::Grid> grid =
              service->RunGrid(caller, grid_request, sink_event, &cancel);
          if (grid.ok()) {
            v1::GridEvent last;
            *last.mutable_grid() = std::move(*grid);
            send("grid", ToJson(last));
          } else {
            send("error", ErrorJson(grid.status()));
          }
          sink.done();
          return true;
        });
  };
  server.Get("/api/v1/grid/stream", stream);
  server.Post("/api/v1/grid/stream", stream);

  const size_t colon = o.address.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(o.address.substr(colon + 1), &port)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--http_addr must be host:port, got \"", o.address, "\""));
  }
  const std::string host = colon == 0 ? "0.0.0.0" : o.address.substr(0, colon);
  gateway->port_ = port == 0 ? server.bind_to_any_port(host.c_str())
                             : (server.bind_to_port(host.c_str(), port) ? port : -1);
  if (gateway->port_ <= 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen for HTTP on ", o.address));
  }
  gateway->thread_ = std::thread([&server] { server.listen_after_bind(); });
  return gateway;
}

HttpGateway::~HttpGateway() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace dgrid
