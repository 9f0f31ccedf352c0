// The gRPC server settings both services share.
//
//   std::unique_ptr<grpc::ServerBuilder> builder =
//       NewServerBuilder(listen, credentials, &port, max_message_bytes, "dgrid-denoiser");
//   builder->RegisterService(&service);
//   ... service-specific channel arguments ...
//   std::unique_ptr<grpc::Server> server = builder->BuildAndStart();
#ifndef DGRID_COMMON_GRPC_SERVER_H_
#define DGRID_COMMON_GRPC_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

namespace dgrid {

// A builder listening on `listen` (the bound port lands in *port at start),
// with grpc.health.v1 and reflection, `max_message_bytes` both ways,
// keepalive that notices dead peers within ~30 s on idle connections, and
// room for 1,024 sync-server threads (each in-flight RPC holds one while it
// waits). Health and reflection register before the builder is made, as
// their plugins are picked up by its constructor.
std::unique_ptr<grpc::ServerBuilder> NewServerBuilder(
    const std::string& listen, const std::shared_ptr<grpc::ServerCredentials>& credentials,
    int* port, int max_message_bytes, const std::string& quota_name);

}  // namespace dgrid

#endif  // DGRID_COMMON_GRPC_SERVER_H_
