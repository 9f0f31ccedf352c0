// Request parsing that names the field at fault. gRPC's protobuf
// deserializer answers every parse failure INTERNAL with an empty message;
// the common one from a client is invalid UTF-8 in a `string` field, which
// proto3 refuses. A service built on RequestParsingService answers such a
// request INVALID_ARGUMENT, e.g. "conditioning.prompt: is not valid UTF-8",
// and parses every other request exactly as gRPC does. Parsing waits for the
// service's Admit hook (its bearer token check, say): a caller it refuses
// gets its refusal, not field-level diagnostics of a request it may not
// send, and the bytes are not parsed for it. Reflection and health see the
// service as they see a generated one: it registers the same method paths.
//
//   class DenoiserServiceImpl final : public RequestParsingService {
//    public:
//     DenoiserServiceImpl() : RequestParsingService(v1::Denoiser::service_full_name()) {
//       AddUnary("Step", &DenoiserServiceImpl::Step);
//       AddServerStreaming("Branch", &DenoiserServiceImpl::Branch);
//     }
//     grpc::Status Step(grpc::ServerContext* context, const v1::StepRequest* request,
//                       v1::StepResponse* response);
//     grpc::Status Branch(grpc::ServerContext* context, const v1::BranchRequest* request,
//                         grpc::ServerWriter<v1::BranchEvent>* writer);
//   };
//   builder->RegisterService(&service);
#ifndef DGRID_COMMON_REQUEST_PARSING_H_
#define DGRID_COMMON_REQUEST_PARSING_H_

#include <google/protobuf/descriptor.h>
#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/impl/rpc_service_method.h>
#include <grpcpp/impl/service_type.h>
#include <grpcpp/server_context.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/method_handler.h>
#include <grpcpp/support/sync_stream.h>

#include <deque>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace dgrid {

// The error a client gets for `wire`, which protobuf failed to parse as a
// `type`: INVALID_ARGUMENT naming the first string field whose bytes are not
// valid UTF-8 ("trajectories[2].path..." style paths), or the first nested
// message whose bytes are not a message, else "request: cannot be parsed as
// <type>".
absl::Status RequestParseError(absl::string_view wire, const google::protobuf::Descriptor& type);
grpc::Status RequestParseError(const grpc::ByteBuffer& wire,
                               const google::protobuf::Descriptor& type);

// A request as RequestParsingService receives it: the bytes, parsed into a
// Message only after the service's Admit hook. Its own type, so that it gets
// its own grpc::SerializationTraits (below).
template <typename Message>
struct ParsedRequest {
  // Mutable: AdmitAndParse lets the bytes go once parsed, so a call that runs
  // for minutes does not hold its request twice.
  mutable grpc::ByteBuffer wire;
};

// Parses `request` into `message`: gRPC's own parse, and when it fails the
// reason (RequestParseError).
template <typename Message>
grpc::Status ParseRequest(const ParsedRequest<Message>& request, Message* message) {
  grpc::ByteBuffer consumed(request.wire);  // gRPC's parse consumes its buffer
  grpc::Status status =
      grpc::SerializationTraits<Message>::Deserialize(&consumed, message);
  if (status.ok() || !request.wire.Valid()) return status;
  return RequestParseError(request.wire, *Message::descriptor());
}

// A grpc::Service whose handlers get requests parsed with RequestParseError
// for the failures. Derive, and add each method of the proto service once,
// from the constructor.
class RequestParsingService : public grpc::Service {
 protected:
  // `service` is the proto service's full name, e.g. "dgrid.v1.Denoiser";
  // its generated descriptor must be linked in.
  explicit RequestParsingService(absl::string_view service);

  // Called for every call before its request is parsed; a status other
  // than OK ends the call with it (the method's name is "Step", say).
  virtual grpc::Status Admit(const char* method, const grpc::ServerContext& context) {
    return grpc::Status::OK;
  }
  // Called when a call ends before its handler runs: refused by Admit, or
  // its request could not be parsed (for a service's request counts).
  virtual void Refused(const char* method, const grpc::Status& status) {}

  template <class Impl, class Request, class Response>
  void AddUnary(const char* method,
                grpc::Status (Impl::*handler)(grpc::ServerContext*, const Request*, Response*)) {
    AddMethod(new grpc::internal::RpcServiceMethod(
        MethodPath(method, *Request::descriptor(), *Response::descriptor(), false),
        grpc::internal::RpcMethod::NORMAL_RPC,
        new grpc::internal::RpcMethodHandler<Impl, ParsedRequest<Request>, Response>(
            [handler, method](Impl* impl, grpc::ServerContext* context,
                              const ParsedRequest<Request>* request, Response* response) {
              Request message;
              const grpc::Status admitted = impl->AdmitAndParse(method, *context, *request,
                                                                &message);
              if (!admitted.ok()) return admitted;
              return (impl->*handler)(context, &message, response);
            },
            static_cast<Impl*>(this))));
  }

  template <class Impl, class Request, class Response>
  void AddServerStreaming(const char* method,
                          grpc::Status (Impl::*handler)(grpc::ServerContext*, const Request*,
                                                        grpc::ServerWriter<Response>*)) {
    AddMethod(new grpc::internal::RpcServiceMethod(
        MethodPath(method, *Request::descriptor(), *Response::descriptor(), true),
        grpc::internal::RpcMethod::SERVER_STREAMING,
        new grpc::internal::ServerStreamingHandler<Impl, ParsedRequest<Request>, Response>(
            [handler, method](Impl* impl, grpc::ServerContext* context,
                              const ParsedRequest<Request>* request,
                              grpc::ServerWriter<Response>* writer) {
              Request message;
              const grpc::Status admitted = impl->AdmitAndParse(method, *context, *request,
                                                                &message);
              if (!admitted.ok()) return admitted;
              return (impl->*handler)(context, &message, writer);
            },
            static_cast<Impl*>(this))));
  }

 public:
  // Admit, then parse; what the call ends with when either fails.
  template <class Request>
  grpc::Status AdmitAndParse(const char* method, const grpc::ServerContext& context,
                             const ParsedRequest<Request>& request, Request* message) {
    grpc::Status status = Admit(method, context);
    if (status.ok() && !request.wire.Valid()) {
      // No request message: the client ended the call before sending it (a
      // gRPC client sends exactly one; the handler runs once it or the end of
      // the stream arrives). gRPC's parse of the missing bytes says INTERNAL
      // ("Couldn't initialize byte buffer reader"), which the services'
      // counts would take for their own failure; the cancellation itself may
      // not have reached the server yet (IsCancelled is often false here).
      status = grpc::Status(grpc::StatusCode::CANCELLED,
                            "the call ended before its request arrived");
    }
    if (status.ok()) status = ParseRequest(request, message);
    request.wire.Clear();
    if (!status.ok()) Refused(method, status);
    return status;
  }

 private:
  // "/<service>/<method>", which the RpcServiceMethod points to. Aborts
  // unless the proto declares `method` with these types: a wiring mistake
  // that no request can fix.
  const char* MethodPath(const char* method, const google::protobuf::Descriptor& request,
                         const google::protobuf::Descriptor& response, bool server_streaming);

  const google::protobuf::ServiceDescriptor* const service_;
  std::deque<std::string> paths_;  // stable addresses
};

}  // namespace dgrid

namespace grpc {

// Keeps the bytes; the handler parses them once the service admits the
// call (RequestParsingService::AdmitAndParse).
template <typename Message>
class SerializationTraits<dgrid::ParsedRequest<Message>, void> {
 public:
  static Status Deserialize(ByteBuffer* buffer, dgrid::ParsedRequest<Message>* request) {
    request->wire.Swap(buffer);
    buffer->Clear();
    return Status::OK;
  }
};

}  // namespace grpc

#endif  // DGRID_COMMON_REQUEST_PARSING_H_
