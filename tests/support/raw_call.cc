#include "tests/support/raw_call.h"

#include <grpcpp/generic/generic_stub.h>

#include <future>
#include <utility>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace dgrid::testing {

grpc::Status RawCall(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                     const std::string& wire, const std::string& authorization) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  if (!authorization.empty()) context.AddMetadata("authorization", authorization);
  grpc::Slice slice(wire);
  const grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, method, grpc::StubOptions(), &request, &response,
                 [&done](grpc::Status status) { done.set_value(std::move(status)); });
  return done.get_future().get();
}

}  // namespace dgrid::testing
