// A gRPC call with raw request bytes, as any client could send them (a
// string field that is not UTF-8, a message that does not parse). Unary on
// the wire, which a server-streaming method that fails before its first
// message answers the same way.
//
//   grpc::Status s = RawCall(channel, "/dgrid.v1.Denoiser/Step", wire, "Bearer t0ken");
#ifndef DGRID_TESTS_SUPPORT_RAW_CALL_H_
#define DGRID_TESTS_SUPPORT_RAW_CALL_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

namespace dgrid::testing {

// `authorization`, when not empty, goes as the "authorization" header. The
// call has 30 s.
grpc::Status RawCall(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                     const std::string& wire, const std::string& authorization = "");

}  // namespace dgrid::testing

#endif  // DGRID_TESTS_SUPPORT_RAW_CALL_H_
