// Request parsing that names the field at fault. gRPC's protobuf
// deserializer answers every parse failure INTERNAL with an empty message;
// the common one from a client is invalid UTF-8 in a `string` field, which
// proto3 refuses. A service built on RequestParsingService answers such a
// request INVALID_ARGUMENT, e.g. "conditioning.prompt: is not valid UTF-8",
// and parses every other request exactly as gRPC does. Reflection and
// health see the service as they see a generated one: it registers the same
// method paths.
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

// A request as a handler of RequestParsingService receives it. Its own type,
// so that it gets its own grpc::SerializationTraits (below).
template <typename Message>
struct ParsedRequest {
  Message message;
};

// A grpc::Service whose handlers get requests parsed with RequestParseError
// for the failures. Derive, and add each method of the proto service once,
// from the constructor.
class RequestParsingService : public grpc::Service {
 protected:
  // `service` is the proto service's full name, e.g. "dgrid.v1.Denoiser";
  // its generated descriptor must be linked in.
  explicit RequestParsingService(absl::string_view service);

  template <class Impl, class Request, class Response>
  void AddUnary(const char* method,
                grpc::Status (Impl::*handler)(grpc::ServerContext*, const Request*, Response*)) {
    AddMethod(new grpc::internal::RpcServiceMethod(
        MethodPath(method, *Request::descriptor(), *Response::descriptor(), false),
        grpc::internal::RpcMethod::NORMAL_RPC,
        new grpc::internal::RpcMethodHandler<Impl, ParsedRequest<Request>, Response>(
            [handler](Impl* impl, grpc::ServerContext* context,
                      const ParsedRequest<Request>* request, Response* response) {
              return (impl->*handler)(context, &request->message, response);
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
            [handler](Impl* impl, grpc::ServerContext* context,
                      const ParsedRequest<Request>* request, grpc::ServerWriter<Response>* writer) {
              return (impl->*handler)(context, &request->message, writer);
            },
            static_cast<Impl*>(this))));
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

// gRPC's own parse; when it fails, the reason, from a second reference to
// the same bytes (gRPC's parse consumes its buffer).
template <typename Message>
class SerializationTraits<dgrid::ParsedRequest<Message>, void> {
 public:
  static Status Deserialize(ByteBuffer* buffer, dgrid::ParsedRequest<Message>* request) {
    const ByteBuffer wire(*buffer);
    Status status = SerializationTraits<Message>::Deserialize(buffer, &request->message);
    if (status.ok() || !wire.Valid()) return status;
    return dgrid::RequestParseError(wire, *Message::descriptor());
  }
};

}  // namespace grpc

#endif  // DGRID_COMMON_REQUEST_PARSING_H_
