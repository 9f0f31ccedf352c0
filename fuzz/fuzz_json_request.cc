// Fuzzes the HTTP API's request bodies: any bytes a client POSTs as a grid
// or curve request must pass the shape check and protobuf's JSON parser, or
// fail with a status, never crash, hang or read out of bounds. The gateway
// runs exactly these two steps before planning (http_gateway.cc).
#include <cstddef>
#include <cstdint>
#include <string>

#include <google/protobuf/util/json_util.h>

#include "dgrid/v1/orchestrator.pb.h"
#include "grid_orchestrator/server/json_shape.h"

namespace {

template <typename Message>
void Parse(const std::string& body) {
  if (!dgrid::CheckJsonShape(body, *Message::descriptor()).ok()) return;
  Message message;
  (void)google::protobuf::util::JsonStringToMessage(body, &message);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  Parse<dgrid::v1::GridRequest>(body);
  Parse<dgrid::v1::CurveRequest>(body);
  return 0;
}
