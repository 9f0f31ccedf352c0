// A request head's header fields as the client sent them. httplib 0.11
// percent-decodes every field value (a token "a%41b" reached the token check
// as "aAb"), drops a line without a colon, a line that does not end in CRLF
// and a field with an empty value, and keeps "Host :" as a name of its own,
// which the Host and framing checks never saw. A proxy in front may read
// any of these otherwise; the gateway reads the head as sent, and refuses
// one that breaks RFC 9112's field-line grammar.
//
//   absl::StatusOr<std::vector<HeadField>> fields = ParseHeadFields(raw_head);
//   if (!fields.ok()) {
//     // 400, with fields.status().message()
//   }
#ifndef DGRID_GRID_ORCHESTRATOR_SERVER_REQUEST_HEAD_H_
#define DGRID_GRID_ORCHESTRATOR_SERVER_REQUEST_HEAD_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dgrid {

struct HeadField {
  std::string name;   // as sent
  std::string value;  // without the whitespace around it (RFC 9110, 5.5)
};

// The fields of `head`: a request line, field lines each ending in CRLF,
// and the empty line. INVALID_ARGUMENT names the first line that is not a
// field line (no colon, a name that is not a token, "Host :" with space
// before the colon, a folded line, a bare CR or LF, a control byte in a
// value), quoting a short piece of it.
absl::StatusOr<std::vector<HeadField>> ParseHeadFields(absl::string_view head);

// The response codings an Accept-Encoding value accepts, of those the
// gateway sends ("br", "gzip"), as a value httplib 0.11 reads right: it
// looks for "br" and "gzip" anywhere in the value, so "gzip;q=0" (not
// gzip) and "nobrotli" read as accepting them. q=0 refuses a coding, "*"
// accepts the others; empty when it accepts neither.
std::string AcceptedCodings(absl::string_view accept_encoding);

// Checks a chunked body (RFC 9112, 7.1) as its bytes arrive. httplib 0.11
// reads a chunk size with strtoul (" 5d" and "0x5d" pass) and takes any two
// bytes after a chunk's data for its CRLF: a proxy in front could frame the
// same bytes otherwise. A trailer section is refused: httplib cannot read
// one.
//
//   ChunkedFraming framing;
//   if (!framing.Take(bytes)) return Refuse(framing.problem());
class ChunkedFraming {
 public:
  // The body's next bytes; false from the first byte outside the grammar
  // on, with problem() saying what it was.
  bool Take(absl::string_view bytes);
  // The last chunk and the empty line after it have come.
  bool done() const { return state_ == State::kDone; }
  const std::string& problem() const { return problem_; }

 private:
  enum class State {
    kSizeStart, kSize, kSizeSpace, kExtension, kSizeLf, kData, kDataCr, kDataLf,
    kTrailer, kTrailerLf, kDone, kBad,
  };
  bool Fail(std::string problem);

  State state_ = State::kSizeStart;
  uint64_t size_ = 0;  // of the chunk being read; what is left of its data
  int digits_ = 0;
  std::string problem_;
};

}  // namespace dgrid

#endif  // DGRID_GRID_ORCHESTRATOR_SERVER_REQUEST_HEAD_H_
