// Echoing client input in error messages, safely: at most a short piece of
// the value, quoted and escaped, so that a huge or binary field can neither
// blow the status metadata past its limit nor garble a terminal.
//
//   return absl::InvalidArgumentError(
//       absl::StrCat("model: unknown model ", ShortQuote(request.model())));
//   // model: unknown model "aaaaaaaa"… (8000 bytes)
#ifndef DGRID_COMMON_SHORT_TEXT_H_
#define DGRID_COMMON_SHORT_TEXT_H_

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace dgrid {

// Values longer than this are cut when echoed.
inline constexpr size_t kMaxEchoBytes = 100;

// `value` in double quotes, invalid UTF-8 and control bytes escaped, cut to
// `max_bytes` (on a character boundary) with its full size appended.
std::string ShortQuote(absl::string_view value, size_t max_bytes = kMaxEchoBytes);

// True when `value` is well-formed UTF-8.
bool IsValidUtf8(absl::string_view value);

}  // namespace dgrid

#endif  // DGRID_COMMON_SHORT_TEXT_H_
