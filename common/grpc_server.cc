#include "common/grpc_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

namespace dgrid {

std::unique_ptr<grpc::ServerBuilder> NewServerBuilder(
    const std::string& listen, const std::shared_ptr<grpc::ServerCredentials>& credentials,
    int* port, int max_message_bytes, const std::string& quota_name) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  auto builder = std::make_unique<grpc::ServerBuilder>();
  builder->AddListeningPort(listen, credentials, port);
  // gRPC sets SO_REUSEPORT by default: a second server on a port in use
  // would bind beside the first and take part of its calls, silently.
  builder->AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder->SetMaxReceiveMessageSize(max_message_bytes);
  builder->SetMaxSendMessageSize(max_message_bytes);
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 20000);
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  grpc::ResourceQuota quota(quota_name);
  quota.SetMaxThreads(1024);
  builder->SetResourceQuota(quota);  // the builder keeps its own reference
  return builder;
}

}  // namespace dgrid
