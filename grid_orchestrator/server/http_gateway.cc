#include "grid_orchestrator/server/http_gateway.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/short_text.h"
#include "common/status_macros.h"
#include "httplib.h"

namespace dgrid {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Struct;
using google::protobuf::Value;
using HandlerResponse = httplib::Server::HandlerResponse;

constexpr char kHealthPath[] = "/healthz";
constexpr char kApiPrefix[] = "/api/";
constexpr char kGridPath[] = "/api/v1/grid";
constexpr char kStreamPath[] = "/api/v1/grid/stream";

// A read from a client waits at most this long for bytes, and a connection
// stays open at most this long with no request (its first included), so that
// an idle or stalled client gives its thread back soon.
constexpr time_t kReadTimeoutSeconds = 5;
constexpr time_t kIdleTimeoutSeconds = 5;
constexpr size_t kRequestsPerConnection = 100;
// Below GridService's default write-stall bound (20 s): a write to a stream
// whose client stopped reading fails on its own, and the grid is cancelled.
constexpr time_t kWriteTimeoutSeconds = 15;
// Deeper JSON is refused before protobuf sees it: protobuf takes lists
// nested 100,000 deep for an empty repeated field, and its parse as a
// google.protobuf.Value (CheckShape) slows with the square of the depth and
// fails past about 33 levels. A GridRequest is 4 deep.
constexpr int kMaxJsonDepth = 32;

// ---- Errors ----

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

void SendError(httplib::Response& response, int http_status, const absl::Status& status) {
  response.status = http_status;
  response.set_content(ErrorJson(status), "application/json");
}

void SendError(httplib::Response& response, const absl::Status& status) {
  SendError(response, HttpStatusFor(status.code()), status);
}

// Answers, then closes the connection: for answers that may leave a request
// body unread, whose bytes must not be read as the next request (httplib
// would buffer a 100 MiB body as one "request line"), and for connections
// past the cap. httplib 0.11 keeps a connection open unless a write fails,
// so the answer goes out through a provider that writes it whole and then
// reports failure.
void SendAndClose(httplib::Response& response, int http_status, std::string body,
                  const char* content_type) {
  response.status = http_status;
  response.set_header("Connection", "close");
  auto shared = std::make_shared<const std::string>(std::move(body));
  response.set_content_provider(shared->size(), content_type,
                                [shared](size_t offset, size_t length, httplib::DataSink& sink) {
                                  sink.write(shared->data() + offset, length);
                                  return false;
                                });
}

void RefuseAndClose(httplib::Response& response, int http_status, const absl::Status& status) {
  SendAndClose(response, http_status, ErrorJson(status), "application/json");
}

// ---- Connections ----

// Set on the threads that take connections past the cap.
thread_local bool t_over_capacity = false;

// httplib gives each accepted connection to a TaskQueue, and the connection
// holds its worker for as long as it stays open, idle, slow or streaming. So
// each of up to `max_connections` gets a thread of its own at once, and an
// idle socket cannot make another connection wait. Past the cap a few other
// threads take the connection, to answer 503 (see Screen): the queue gets a
// closure, not the socket, so it cannot refuse one unread.
class ConnectionPool : public httplib::TaskQueue {
 public:
  explicit ConnectionPool(size_t max_connections)
      : max_connections_(max_connections),
        serving_(max_connections),
        refusing_(kRefusingThreads) {}

  // Called by httplib's one accept thread.
  void enqueue(std::function<void()> connection) override {
    if (open_.load() < max_connections_) {
      open_.fetch_add(1);
      serving_.enqueue([this, connection = std::move(connection)] {
        connection();
        open_.fetch_sub(1);
      });
      return;
    }
    refusing_.enqueue([connection = std::move(connection)] {
      t_over_capacity = true;
      connection();
      t_over_capacity = false;
    });
  }

  void shutdown() override {
    serving_.shutdown();
    refusing_.shutdown();
  }

 private:
  static constexpr size_t kRefusingThreads = 4;
  const size_t max_connections_;
  std::atomic<size_t> open_{0};
  httplib::ThreadPool serving_;
  httplib::ThreadPool refusing_;
};

// ---- Cross-origin requests ----

// Which other origins' scripts may call the API. A browser lets a script
// read a cross-origin answer only when it carries
// Access-Control-Allow-Origin, and sends a non-simple request (a JSON POST,
// a token) only after a preflight OPTIONS that allows it. The API also
// refuses outright a request from an origin it does not allow: a simple
// cross-origin GET of the stream would otherwise start a grid.
class CorsPolicy {
 public:
  static absl::StatusOr<CorsPolicy> Create(const std::vector<std::string>& origins) {
    CorsPolicy policy;
    for (const std::string& origin : origins) {
      if (origin == "*") {
        policy.any_ = true;
        continue;
      }
      const std::string lower = absl::AsciiStrToLower(origin);
      const size_t host = lower.find("://");
      const absl::string_view scheme = absl::string_view(lower).substr(0, host);
      if (host == std::string::npos || (scheme != "http" && scheme != "https") ||
          host + 3 == lower.size() || lower.find_first_of("/ ", host + 3) != std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--http_cors_origins: ", ShortQuote(origin), " is not scheme://host[:port] or *"));
      }
      policy.origins_.insert(lower);
    }
    return policy;
  }

  // True when `request` comes from a page of another origin. Browsers send
  // Origin on cross-origin requests and on same-origin POSTs. The host alone
  // decides, not the scheme: behind a proxy that ends TLS the page is https
  // while this server speaks http.
  static bool CrossOrigin(const httplib::Request& request) {
    const std::string origin = request.get_header_value("Origin");
    if (origin.empty()) return false;
    const size_t host = origin.find("://");
    return host == std::string::npos ||
           !absl::EqualsIgnoreCase(absl::string_view(origin).substr(host + 3),
                                   request.get_header_value("Host"));
  }
  bool Allows(const std::string& origin) const {
    return any_ || origins_.count(absl::AsciiStrToLower(origin)) > 0;
  }
  std::string AllowOriginHeader(const std::string& origin) const { return any_ ? "*" : origin; }

 private:
  CorsPolicy() = default;
  bool any_ = false;
  std::set<std::string> origins_;
};

// ---- Screening, before any route ----

// The methods a path takes, for 405's Allow header.
const char* AllowedMethods(const std::string& path) {
  if (path == kGridPath) return "POST, OPTIONS";
  if (path == kStreamPath) return "GET, HEAD, POST, OPTIONS";
  return "GET, HEAD, OPTIONS";
}

// The steps of Screen. Each answers (true) or lets the request go on. Their
// refusals close the connection: the request's body, if any, is unread.

bool AnswerOverCapacity(const httplib::Request& request, httplib::Response& response) {
  if (!t_over_capacity) return false;
  if (request.path == kHealthPath) {
    // Health answers even at the cap.
    SendAndClose(response, 200, "ok\n", "text/plain");
    return true;
  }
  response.set_header("Retry-After", "1");
  RefuseAndClose(response, 503, absl::UnavailableError("too many open connections; retry later"));
  return true;
}

// The static file handler stats the path as a C string: "/index.html\0.png"
// would serve index.html, typed by the ".png" it never opened.
bool RefuseControlBytes(const httplib::Request& request, httplib::Response& response) {
  for (const char c : request.path) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      RefuseAndClose(response, 400,
                     absl::InvalidArgumentError(absl::StrCat(
                         "path: control bytes are not allowed, got ", ShortQuote(request.path))));
      return true;
    }
  }
  return false;
}

// Only the grid POSTs have a body, which their route reads within its limit.
// httplib would read any other POST's body whole, chunked or not.
bool RefuseMethodOrBody(const httplib::Request& request, httplib::Response& response) {
  const bool posts_grid =
      request.method == "POST" && (request.path == kGridPath || request.path == kStreamPath);
  if (posts_grid) return false;
  if (request.method != "GET" && request.method != "HEAD" && request.method != "OPTIONS") {
    response.set_header("Allow", AllowedMethods(request.path));
    RefuseAndClose(response, 405,
                   absl::InvalidArgumentError(absl::StrCat("method ", request.method,
                                                           " is not allowed on ",
                                                           ShortQuote(request.path))));
    return true;
  }
  const std::string length = request.get_header_value("Content-Length");
  if (request.has_header("Transfer-Encoding") || (!length.empty() && length != "0")) {
    RefuseAndClose(response, 400,
                   absl::InvalidArgumentError(
                       absl::StrCat("a ", request.method, " request carries no body")));
    return true;
  }
  return false;
}

bool RefuseOrigin(const CorsPolicy& cors, const httplib::Request& request,
                  httplib::Response& response) {
  const std::string origin = request.get_header_value("Origin");
  if (!cors.CrossOrigin(request) || cors.Allows(origin)) return false;
  if (request.method != "OPTIONS" && !absl::StartsWith(request.path, kApiPrefix)) {
    return false;  // the page's files: the browser keeps them from the script
  }
  RefuseAndClose(response, 403,
                 absl::PermissionDeniedError(absl::StrCat(
                     "origin ", ShortQuote(origin),
                     " may not call this API (see the orchestrator's --http_cors_origins)")));
  return true;
}

// A preflight that RefuseOrigin let through (Decorate adds the origin).
bool AnswerPreflight(const httplib::Request& request, httplib::Response& response) {
  if (request.method != "OPTIONS") return false;
  response.status = 204;
  response.set_header("Access-Control-Allow-Methods", "GET, POST");
  response.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type");
  response.set_header("Access-Control-Max-Age", "600");
  return true;
}

// What every request goes through before its route. Handled: answered here.
HandlerResponse Screen(const CorsPolicy& cors, const httplib::Request& request,
                       httplib::Response& response) {
  const bool answered = AnswerOverCapacity(request, response) ||
                        RefuseControlBytes(request, response) ||
                        RefuseMethodOrBody(request, response) ||
                        RefuseOrigin(cors, request, response) ||
                        AnswerPreflight(request, response);
  return answered ? HandlerResponse::Handled : HandlerResponse::Unhandled;
}

// Headers of every answer.
void Decorate(const CorsPolicy& cors, const httplib::Request& request,
              httplib::Response& response) {
  response.set_header("X-Content-Type-Options", "nosniff");
  const std::string origin = request.get_header_value("Origin");
  if (cors.CrossOrigin(request) && cors.Allows(origin)) {
    response.set_header("Access-Control-Allow-Origin", cors.AllowOriginHeader(origin));
    response.set_header("Vary", "Origin");
  }
}

// ---- Request bodies ----

// "application/json", with at most a charset parameter, of UTF-8.
bool IsJsonContentType(absl::string_view content_type) {
  const std::vector<absl::string_view> parts = absl::StrSplit(content_type, ';');
  if (!absl::EqualsIgnoreCase(absl::StripAsciiWhitespace(parts[0]), "application/json")) {
    return false;
  }
  for (size_t i = 1; i < parts.size(); ++i) {
    const absl::string_view parameter = absl::StripAsciiWhitespace(parts[i]);
    if (!parameter.empty() && !absl::EqualsIgnoreCase(parameter, "charset=utf-8") &&
        !absl::EqualsIgnoreCase(parameter, "charset=\"utf-8\"")) {
      return false;
    }
  }
  return true;
}

// Reads a POST body into `body`, or answers the error and returns false.
// httplib 0.11 holds only a Content-Length to its payload limit and reads a
// chunked body (or one without a length) whole, so here the body is counted
// as it arrives, whatever its framing.
bool ReadBody(const httplib::Request& request, const httplib::ContentReader& reader,
              size_t max_bytes, httplib::Response& response, std::string* body) {
  const std::string content_type = request.get_header_value("Content-Type");
  if (!IsJsonContentType(content_type)) {
    RefuseAndClose(response, 415,
                   absl::InvalidArgumentError(absl::StrCat(
                       "Content-Type must be application/json, got ", ShortQuote(content_type))));
    return false;
  }
  const absl::Status too_large = absl::ResourceExhaustedError(
      absl::StrCat("request body: larger than the limit of ", max_bytes, " bytes"));
  const std::string transfer = request.get_header_value("Transfer-Encoding");
  const bool chunked = absl::EqualsIgnoreCase(transfer, "chunked");
  if (!chunked && !transfer.empty()) {
    RefuseAndClose(response, 400,
                   absl::InvalidArgumentError(
                       absl::StrCat("Transfer-Encoding: only chunked is supported, got ",
                                    ShortQuote(transfer))));
    return false;
  }
  if (!chunked) {
    const std::string length = request.get_header_value("Content-Length");
    if (length.empty()) return true;  // no body: all defaults
    uint64_t declared = 0;
    if (!absl::SimpleAtoi(length, &declared)) {
      RefuseAndClose(response, 400,
                     absl::InvalidArgumentError(
                         absl::StrCat("Content-Length: not a number: ", ShortQuote(length))));
      return false;
    }
    if (declared > max_bytes) {
      RefuseAndClose(response, 413, too_large);
      return false;
    }
  }
  bool over = false;
  const bool read = reader([&](const char* data, size_t size) {
    if (body->size() + size > max_bytes) {
      over = true;
      return false;
    }
    body->append(data, size);
    return true;
  });
  if (over || !read) {
    RefuseAndClose(response, over ? 413 : 400,
                   over ? too_large
                        : absl::InvalidArgumentError("request body: cannot be read"));
    return false;
  }
  return true;
}

// ---- GridRequest from JSON ----
//
// protobuf 3.21's JSON parser is lenient where a client's mistake should be
// an error: it flattens [[5]] into a repeated field, takes a lone value for a
// list and drops null in a list. So the text is parsed as a
// google.protobuf.Value first and held to GridRequest's descriptor; only
// then is it parsed as the message, which checks each value.

std::string FirstLine(const std::string& text) { return text.substr(0, text.find('\n')); }

std::string JoinPath(const std::string& path, const std::string& name) {
  return path.empty() ? name : absl::StrCat(path, ".", name);
}

const char* KindOf(const Value& value) {
  switch (value.kind_case()) {
    case Value::kNumberValue:
      return "a number";
    case Value::kStringValue:
      return "a string";
    case Value::kBoolValue:
      return "true or false";
    case Value::kStructValue:
      return "an object";
    case Value::kListValue:
      return "a list";
    default:
      return "null";
  }
}

// What one value of `field` (not its list) looks like in JSON.
const char* ExpectedKind(const FieldDescriptor& field) {
  switch (field.cpp_type()) {
    case FieldDescriptor::CPPTYPE_STRING:
      return "a string";
    case FieldDescriptor::CPPTYPE_BOOL:
      return "true or false";
    case FieldDescriptor::CPPTYPE_ENUM:
      return "an enum name";
    case FieldDescriptor::CPPTYPE_MESSAGE:
      return "an object";
    default:
      return "a number";
  }
}

absl::Status Mismatch(const std::string& path, const char* expected, const Value& value) {
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": expected ", expected, ", got ", KindOf(value)));
}

absl::Status CheckObject(const Struct& object, const Descriptor& type, const std::string& path);

// One value of `field`: a list element, or the field's value when singular.
absl::Status CheckOne(const Value& value, const FieldDescriptor& field, const std::string& path) {
  if (field.cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
    const Descriptor& type = *field.message_type();
    // Wrappers (Int32Value...) are plain values in JSON, like their `value`.
    if (type.file()->name() == "google/protobuf/wrappers.proto") {
      return CheckOne(value, *type.FindFieldByNumber(1), path);
    }
    // Struct, Timestamp...: protobuf's own mapping, checked by its parser.
    if (type.file()->package() == "google.protobuf") return absl::OkStatus();
    if (value.kind_case() != Value::kStructValue) return Mismatch(path, "an object", value);
    return CheckObject(value.struct_value(), type, path);
  }
  if (value.kind_case() == Value::kListValue || value.kind_case() == Value::kStructValue) {
    return Mismatch(path, ExpectedKind(field), value);
  }
  return absl::OkStatus();
}

absl::Status CheckField(const Value& value, const FieldDescriptor& field,
                        const std::string& path) {
  if (value.kind_case() == Value::kNullValue) return absl::OkStatus();  // unset
  // A map is an object in JSON; protobuf's parser checks it.
  if (field.is_map()) return absl::OkStatus();
  if (!field.is_repeated()) return CheckOne(value, field, path);
  if (value.kind_case() != Value::kListValue) return Mismatch(path, "a list", value);
  for (int i = 0; i < value.list_value().values_size(); ++i) {
    const Value& element = value.list_value().values(i);
    const std::string at = absl::StrCat(path, "[", i, "]");
    if (element.kind_case() == Value::kNullValue) {
      return Mismatch(at, ExpectedKind(field), element);
    }
    RETURN_IF_ERROR(CheckOne(element, field, at));
  }
  return absl::OkStatus();
}

absl::Status CheckObject(const Struct& object, const Descriptor& type, const std::string& path) {
  for (const auto& [key, value] : object.fields()) {
    // JSON may name a field as in the .proto or in lowerCamelCase.
    const FieldDescriptor* field = type.FindFieldByName(key);
    if (!field) field = type.FindFieldByCamelcaseName(key);
    if (!field) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown field ", ShortQuote(JoinPath(path, key))));
    }
    RETURN_IF_ERROR(CheckField(value, *field, JoinPath(path, field->name())));
  }
  return absl::OkStatus();
}

// Counts nesting outside strings, so that deep text never reaches protobuf.
absl::Status CheckDepth(absl::string_view json) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < json.size(); ++i) {
    const char c = json[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) {
        return absl::InvalidArgumentError(
            absl::StrCat("JSON nested deeper than ", kMaxJsonDepth, " levels"));
      }
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return absl::OkStatus();
}

absl::Status CheckShape(const std::string& json) {
  RETURN_IF_ERROR(CheckDepth(json));
  Value value;
  if (const auto parsed = google::protobuf::util::JsonStringToMessage(json, &value);
      !parsed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("not valid JSON: ", ShortQuote(FirstLine(std::string(parsed.message())))));
  }
  if (value.kind_case() != Value::kStructValue) {
    return Mismatch("GridRequest", "an object", value);
  }
  return CheckObject(value.struct_value(), *v1::GridRequest::descriptor(), "");
}

// `source` names the text in errors: "request body", or the query parameter.
absl::Status ParseGridRequest(const std::string& json, absl::string_view source,
                              v1::GridRequest* request) {
  if (json.empty()) return absl::OkStatus();  // all defaults
  if (absl::Status shape = CheckShape(json); !shape.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", shape.message()));
  }
  if (const auto parsed = google::protobuf::util::JsonStringToMessage(json, request);
      !parsed.ok()) {
    // protobuf's messages quote values whole.
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": ", ShortQuote(FirstLine(std::string(parsed.message())))));
  }
  return absl::OkStatus();
}

// ---- Routes ----

Caller CallerOf(const httplib::Request& request) {
  Caller caller;
  caller.client = request.remote_addr;
  caller.authorization = request.get_header_value("Authorization");
  return caller;
}

std::string SseEvent(const std::string& name, const std::string& data) {
  return absl::StrCat("event: ", name, "\ndata: ", data, "\n\n");
}

void ServeModels(GridService& service, const httplib::Request& request,
                 httplib::Response& response) {
  absl::StatusOr<v1::ListModelsResponse> models = service.ListModels(CallerOf(request));
  if (!models.ok()) return SendError(response, models.status());
  response.set_content(ToJson(*models), "application/json");
}

void ServeGrid(GridService& service, const v1::GridRequest& grid_request,
               const httplib::Request& request, httplib::Response& response) {
  GridCancel cancel;
  absl::StatusOr<v1::Grid> grid =
      service.RunGrid(CallerOf(request), grid_request, [](const v1::GridEvent&) { return true; },
                      &cancel, /*stream_grid=*/false);
  if (!grid.ok()) return SendError(response, grid.status());
  response.set_content(ToJson(*grid), "application/json");
}

// Admits the grid while the answer can still carry a status, then streams
// it: past this point an error can only be an `error` event.
void ServeStream(GridService& service, const v1::GridRequest& grid_request,
                 const httplib::Request& request, httplib::Response& response) {
  const Caller caller = CallerOf(request);
  absl::StatusOr<std::unique_ptr<AdmittedGrid>> admitted = service.Admit(caller, grid_request);
  if (!admitted.ok()) return SendError(response, admitted.status());
  // The provider is a copyable std::function; it holds the grid's admission
  // until the answer is done with.
  std::shared_ptr<const AdmittedGrid> grid = std::move(*admitted);
  GridService* const runner = &service;
  response.set_header("Cache-Control", "no-cache");
  response.set_chunked_content_provider(
      "text/event-stream", [runner, caller, grid](size_t, httplib::DataSink& sink) {
        // A client that went away is noticed when a write to it fails: the
        // handler has no socket to watch, and the sink's is_writable() may
        // not be called from GridService's watch thread (it reads the
        // writer's state, and blocks for the write timeout).
        GridCancel cancel;
        auto send = [&](const std::string& name, const std::string& data) {
          const std::string event = SseEvent(name, data);
          return sink.write(event.data(), event.size());
        };
        auto send_event = [&](const v1::GridEvent& event) {
          const char* name = event.has_plan()    ? "plan"
                             : event.has_trunk() ? "trunk"
                             : event.has_cell()  ? "cell"
                                                 : "grid";
          return send(name, ToJson(event));
        };
        absl::StatusOr<v1::Grid> result =
            runner->Run(*grid, caller, send_event, &cancel, /*stream_grid=*/true);
        if (!result.ok()) send("error", ErrorJson(result.status()));
        sink.done();
        return true;
      });
}

// A POST handler whose body is a GridRequest.
using GridRoute = void (*)(GridService&, const v1::GridRequest&, const httplib::Request&,
                           httplib::Response&);

httplib::Server::HandlerWithContentReader PostRoute(GridService* service, size_t max_body_bytes,
                                                    GridRoute route) {
  return [service, max_body_bytes, route](const httplib::Request& request,
                                          httplib::Response& response,
                                          const httplib::ContentReader& reader) {
    std::string body;
    if (!ReadBody(request, reader, max_body_bytes, response, &body)) return;
    v1::GridRequest grid_request;
    if (absl::Status parsed = ParseGridRequest(body, "request body", &grid_request);
        !parsed.ok()) {
      return SendError(response, parsed);
    }
    route(*service, grid_request, request, response);
  };
}

void AddRoutes(GridService* service, size_t max_body_bytes, httplib::Server& server) {
  server.Get(kHealthPath, [](const httplib::Request&, httplib::Response& response) {
    response.set_content("ok\n", "text/plain");
  });
  server.Get("/api/v1/models", [service](const httplib::Request& request,
                                         httplib::Response& response) {
    ServeModels(*service, request, response);
  });
  server.Post(kGridPath, PostRoute(service, max_body_bytes, &ServeGrid));
  server.Post(kStreamPath, PostRoute(service, max_body_bytes, &ServeStream));
  // EventSource can only GET: the request comes as a query parameter, whose
  // length httplib bounds (8 KiB of URI).
  server.Get(kStreamPath, [service](const httplib::Request& request,
                                    httplib::Response& response) {
    v1::GridRequest grid_request;
    if (absl::Status parsed =
            ParseGridRequest(request.get_param_value("request"), "request", &grid_request);
        !parsed.ok()) {
      return SendError(response, parsed);
    }
    ServeStream(*service, grid_request, request, response);
  });
}

absl::StatusOr<std::unique_ptr<httplib::Server>> NewServer(const ServerTlsFiles& tls) {
  if (tls.cert.empty() && tls.key.empty()) return std::make_unique<httplib::Server>();
  if (tls.cert.empty() || tls.key.empty()) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
  }
  auto server = std::make_unique<httplib::SSLServer>(
      tls.cert.c_str(), tls.key.c_str(), tls.client_ca.empty() ? nullptr : tls.client_ca.c_str());
  if (!server->is_valid()) {
    return absl::InvalidArgumentError("--tls_cert/--tls_key: cannot set up HTTPS");
  }
  return std::unique_ptr<httplib::Server>(std::move(server));
}

// The limits that keep one client from holding the server: see
// ConnectionPool and the timeouts above.
void BoundConnections(const HttpGatewayOptions& o, httplib::Server& server) {
  const size_t max_connections = static_cast<size_t>(std::max(o.max_connections, 1));
  server.new_task_queue = [max_connections] { return new ConnectionPool(max_connections); };
  server.set_payload_max_length(o.max_body_bytes);
  server.set_read_timeout(kReadTimeoutSeconds, 0);
  server.set_write_timeout(kWriteTimeoutSeconds, 0);
  server.set_keep_alive_timeout(kIdleTimeoutSeconds);
  server.set_keep_alive_max_count(kRequestsPerConnection);
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpGateway>> HttpGateway::Start(const HttpGatewayOptions& o,
                                                                 GridService* service) {
  auto gateway = std::unique_ptr<HttpGateway>(new HttpGateway());
  ASSIGN_OR_RETURN(gateway->server_, NewServer(o.tls));
  ASSIGN_OR_RETURN(const CorsPolicy cors, CorsPolicy::Create(o.cors_origins));
  httplib::Server& server = *gateway->server_;
  BoundConnections(o, server);
  server.set_pre_routing_handler(
      [cors](const httplib::Request& request, httplib::Response& response) {
        return Screen(cors, request, response);
      });
  server.set_post_routing_handler(
      [cors](const httplib::Request& request, httplib::Response& response) {
        Decorate(cors, request, response);
      });
  if (!o.web_dir.empty() && !server.set_mount_point("/", o.web_dir)) {
    return absl::InvalidArgumentError(absl::StrCat("--web_dir: no folder at ", o.web_dir));
  }
  AddRoutes(service, o.max_body_bytes, server);

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
