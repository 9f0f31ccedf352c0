// Fuzzes the HTTP API's request bodies: any bytes a client POSTs as a grid
// or curve request must parse, or fail with a status naming the body, never
// crash, hang or read out of bounds. ParseJsonRequest is what the gateway
// calls (http_gateway.cc): the shape check, protobuf's JSON parser, and the
// quoting of its errors.
#include <cstddef>
#include <cstdint>
#include <string>

#include "dgrid/v1/orchestrator.pb.h"
#include "grid_orchestrator/server/json_shape.h"

namespace {

template <typename Message>
void Parse(const std::string& body) {
  Message message;
  (void)dgrid::ParseJsonRequest(body, "request body", &message);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  Parse<dgrid::v1::GridRequest>(body);
  Parse<dgrid::v1::CurveRequest>(body);
  return 0;
}
