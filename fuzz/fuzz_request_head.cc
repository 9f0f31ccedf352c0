// Fuzzes what the HTTP gateway reads of a request before httplib's own
// parse counts: the head as sent (ParseHeadFields) and a chunked body's
// framing (ChunkedFraming), which every client's bytes reach. Any bytes
// must parse or be refused with a reason, never crash, hang or read out of
// bounds; the framing must say the same fed whole or in pieces.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/strings/string_view.h"
#include "grid_orchestrator/server/request_head.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  const auto fields = dgrid::ParseHeadFields(bytes);
  if (fields.ok()) {
    for (const dgrid::HeadField& field : *fields) (void)dgrid::AcceptedCodings(field.value);
  } else if (fields.status().message().empty()) {
    std::abort();  // a refusal says why
  }
  // The framing, whole and cut where the first byte says.
  dgrid::ChunkedFraming whole;
  const bool took = whole.Take(bytes);
  dgrid::ChunkedFraming pieces;
  const size_t cut = size == 0 ? 0 : data[0] % size;
  const bool first = pieces.Take(bytes.substr(0, cut));
  const bool took_pieces = first && pieces.Take(bytes.substr(cut));
  if (took != took_pieces || whole.problem() != pieces.problem() ||
      whole.done() != pieces.done() || took != whole.problem().empty()) {
    std::abort();
  }
  return 0;
}
