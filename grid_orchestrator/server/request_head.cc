#include "grid_orchestrator/server/request_head.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/short_text.h"

namespace dgrid {
namespace {

// RFC 9110's tchar: what a field name is made of.
bool IsTokenChar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return absl::string_view("!#$%&'*+-.^_`|~").find(c) != absl::string_view::npos;
}

bool IsSpaceOrTab(char c) { return c == ' ' || c == '\t'; }

// Field values are visible bytes, spaces and tabs (obs-text, bytes past
// 0x7f, included); no other control byte.
bool IsValueByte(char c) {
  const auto byte = static_cast<unsigned char>(c);
  return byte == '\t' || (byte >= 0x20 && byte != 0x7f);
}

absl::Status BadLine(int number, absl::string_view line, absl::string_view why) {
  // The name, not the value: it may be a credential.
  const absl::string_view shown = line.substr(0, line.find(':'));
  return absl::InvalidArgumentError(absl::StrCat("request head: header line ", number, " (",
                                                 ShortQuote(shown, 40), ") ", why));
}

}  // namespace

absl::StatusOr<std::vector<HeadField>> ParseHeadFields(absl::string_view head) {
  std::vector<HeadField> fields;
  size_t at = head.find("\r\n");
  if (at == absl::string_view::npos) {
    return absl::InvalidArgumentError("request head: the request line does not end in CRLF");
  }
  at += 2;
  for (int number = 1;; ++number) {
    const size_t end = head.find("\r\n", at);
    if (end == absl::string_view::npos) {
      return absl::InvalidArgumentError("request head: it does not end with an empty line");
    }
    const absl::string_view line = head.substr(at, end - at);
    at = end + 2;
    if (line.empty()) break;
    if (IsSpaceOrTab(line[0])) {
      return BadLine(number, line, "is folded onto the line before (obsolete line folding)");
    }
    if (line.find_first_of("\r\n") != absl::string_view::npos) {
      return BadLine(number, line, "has a bare CR or LF; lines end in CRLF");
    }
    const size_t colon = line.find(':');
    if (colon == absl::string_view::npos) return BadLine(number, line, "has no colon");
    const absl::string_view name = line.substr(0, colon);
    if (name.empty()) return BadLine(number, line, "has no field name");
    for (const char c : name) {
      if (IsTokenChar(c)) continue;
      return BadLine(number, line,
                     IsSpaceOrTab(c) ? "has space before its colon"
                                     : "has a field name that is not a token");
    }
    absl::string_view value = line.substr(colon + 1);
    while (!value.empty() && IsSpaceOrTab(value.front())) value.remove_prefix(1);
    while (!value.empty() && IsSpaceOrTab(value.back())) value.remove_suffix(1);
    for (const char c : value) {
      if (!IsValueByte(c)) return BadLine(number, line, "has a control byte in its value");
    }
    fields.push_back({std::string(name), std::string(value)});
  }
  if (at != head.size()) {
    return absl::InvalidArgumentError("request head: bytes after its empty line");
  }
  return fields;
}

std::string AcceptedCodings(absl::string_view accept_encoding) {
  // Each coding's q, if listed; "*" stands for the ones not listed.
  std::optional<double> br, gzip, any;
  for (absl::string_view item : absl::StrSplit(accept_encoding, ',')) {
    std::vector<absl::string_view> parts = absl::StrSplit(item, ';');
    const absl::string_view coding = absl::StripAsciiWhitespace(parts[0]);
    double q = 1.0;
    for (size_t i = 1; i < parts.size(); ++i) {
      const absl::string_view parameter = absl::StripAsciiWhitespace(parts[i]);
      if (!absl::StartsWithIgnoreCase(parameter, "q=")) continue;
      // A weight that is no number accepts nothing.
      if (!absl::SimpleAtod(parameter.substr(2), &q) || !(q >= 0.0 && q <= 1.0)) q = 0.0;
    }
    if (absl::EqualsIgnoreCase(coding, "br")) br = q;
    if (absl::EqualsIgnoreCase(coding, "gzip") || absl::EqualsIgnoreCase(coding, "x-gzip")) {
      gzip = q;
    }
    if (coding == "*") any = q;
  }
  auto accepts = [&](const std::optional<double>& q) { return q ? *q > 0 : any && *any > 0; };
  std::vector<absl::string_view> codings;
  if (accepts(br)) codings.push_back("br");
  if (accepts(gzip)) codings.push_back("gzip");
  return absl::StrJoin(codings, ", ");
}

bool ChunkedFraming::Fail(std::string problem) {
  state_ = State::kBad;
  problem_ = std::move(problem);
  return false;
}

bool ChunkedFraming::Take(absl::string_view bytes) {
  for (size_t i = 0; i < bytes.size(); ++i) {
    const char c = bytes[i];
    switch (state_) {
      case State::kSizeStart:
      case State::kSize:
        if (absl::ascii_isxdigit(static_cast<unsigned char>(c))) {
          // 15 digits past leading zeros: past a petabyte, and no overflow.
          if (size_ > 0 || c != '0') ++digits_;
          if (digits_ > 15) return Fail("a chunk size of more than 15 hex digits");
          size_ = size_ * 16 + (c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
          state_ = State::kSize;
          break;
        }
        if (state_ == State::kSizeStart) {
          return Fail(absl::StrCat("a chunk size starts with ", ShortQuote(bytes.substr(i, 1)),
                                   ", not a hex digit"));
        }
        // Past the digits: BWS, then ";" or the line's end.
        state_ = State::kSizeSpace;
        [[fallthrough]];
      case State::kSizeSpace:
        if (c == ';') {
          state_ = State::kExtension;
        } else if (c == '\r') {
          state_ = State::kSizeLf;
        } else if (c != ' ' && c != '\t') {
          return Fail(absl::StrCat("a chunk size has ", ShortQuote(bytes.substr(i, 1)),
                                   " after its hex digits"));
        }
        break;
      case State::kExtension:  // ignored, as the grammar lets a recipient
        if (c == '\r') {
          state_ = State::kSizeLf;
        } else if (c != '\t' && (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)) {
          return Fail("a control byte in a chunk extension");
        }
        break;
      case State::kSizeLf:
        if (c != '\n') return Fail("a chunk size line ends in a CR without LF");
        digits_ = 0;
        state_ = size_ == 0 ? State::kTrailer : State::kData;
        break;
      case State::kData: {
        const uint64_t take = std::min<uint64_t>(size_, bytes.size() - i);
        size_ -= take;
        i += take - 1;
        if (size_ == 0) state_ = State::kDataCr;
        break;
      }
      case State::kDataCr:
        if (c != '\r') return Fail("a chunk's data runs past its size (no CRLF after it)");
        state_ = State::kDataLf;
        break;
      case State::kDataLf:
        if (c != '\n') return Fail("a chunk's data runs past its size (no CRLF after it)");
        state_ = State::kSizeStart;
        break;
      case State::kTrailer:
        if (c != '\r') {
          return Fail("a trailer section after the last chunk, which this server does not read; "
                      "send the body without one");
        }
        state_ = State::kTrailerLf;
        break;
      case State::kTrailerLf:
        if (c != '\n') return Fail("the last chunk's empty line ends in a CR without LF");
        state_ = State::kDone;
        break;
      case State::kDone:
        return Fail("bytes after the last chunk");
      case State::kBad:
        return false;
    }
  }
  return true;
}

}  // namespace dgrid
