// The one place where absl::Status and grpc::Status convert (as TF Serving's
// ToGRPCStatus). Codes map one to one; the message is kept.
#ifndef DGRID_COMMON_GRPC_STATUS_H_
#define DGRID_COMMON_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace dgrid {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace dgrid

#endif  // DGRID_COMMON_GRPC_STATUS_H_
