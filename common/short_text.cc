#include "common/short_text.h"

#include <charconv>
#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace dgrid {
namespace {

// Length of the well-formed UTF-8 sequence starting at s[i], or 0; its code
// point in *out when out is given.
size_t Utf8SequenceLength(absl::string_view s, size_t i, uint32_t* out = nullptr) {
  const unsigned char c = s[i];
  size_t n;
  uint32_t min;
  if (c < 0x80) {
    if (out) *out = c;
    return 1;
  }
  if ((c & 0xE0) == 0xC0) {
    n = 2;
    min = 0x80;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3;
    min = 0x800;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4;
    min = 0x10000;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  uint32_t code = c & (0x7F >> n);
  for (size_t k = 1; k < n; ++k) {
    const unsigned char cc = s[i + k];
    if ((cc & 0xC0) != 0x80) return 0;
    code = (code << 6) | (cc & 0x3F);
  }
  // Overlong forms, surrogates and code points past U+10FFFF are invalid.
  if (code < min || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return 0;
  if (out) *out = code;
  return n;
}

// C escapes for ASCII controls, quotes and backslashes, \xNN for each byte
// of an ill-formed sequence, and \u{XXXX} for C1 controls and bidirectional
// controls; other well-formed non-ASCII characters stay.
std::string EscapeForQuote(absl::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    uint32_t c = 0;
    const size_t n = Utf8SequenceLength(s, i, &c);
    if (n == 0) {
      absl::StrAppend(&out, "\\x", absl::Hex(static_cast<unsigned char>(s[i]), absl::kZeroPad2));
      ++i;
    } else if (n == 1) {
      absl::StrAppend(&out, absl::CEscape(s.substr(i, 1)));
      ++i;
    } else {
      // C1 controls (U+009B starts a terminal command, as ESC [ does) and the
      // bidirectional overrides and isolates, which reorder what follows.
      if (c <= 0x9F || (c >= 0x202A && c <= 0x202E) || (c >= 0x2066 && c <= 0x2069)) {
        absl::StrAppend(&out, absl::StrFormat("\\u{%04X}", c));
      } else {
        out.append(s.data() + i, n);
      }
      i += n;
    }
  }
  return out;
}

// U+FDD0..U+FDEF and the last two code points of every plane: Unicode keeps
// them out of interchange, and Cairo refuses text that holds one.
bool IsNoncharacter(uint32_t c) { return (c >= 0xFDD0 && c <= 0xFDEF) || (c & 0xFFFE) == 0xFFFE; }

}  // namespace

std::string ByteCount(int64_t bytes) {
  if (bytes < 4096) return absl::StrCat(bytes, " bytes");
  if (bytes < (int64_t{1} << 20)) return absl::StrCat(bytes >> 10, " KiB");
  return absl::StrFormat("%.1f MiB", bytes / 1048576.0);
}

std::string SwitchedNegativeNote(absl::string_view negative, absl::string_view grid_negative,
                                 size_t max_bytes) {
  if (negative == grid_negative) return "";
  if (negative.empty()) return ", no negative prompt";
  return absl::StrCat(", negative \xE2\x80\x9C", CutText(negative, max_bytes), "\xE2\x80\x9D");
}

absl::Status CheckClientText(absl::string_view field, absl::string_view value, size_t max_bytes) {
  // The size first: nothing below reads more than max_bytes of a long value.
  if (value.size() > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", value.size(),
                                                   " bytes exceeds the limit of ", max_bytes));
  }
  for (size_t i = 0; i < value.size();) {
    uint32_t c = 0;
    const size_t n = Utf8SequenceLength(value, i, &c);
    if (n == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": is not valid UTF-8 (at byte ", i, ")"));
    }
    if (IsNoncharacter(c)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: holds the noncharacter U+%04X at byte %d", field, c, i));
    }
    i += n;
  }
  return absl::OkStatus();
}

namespace {

template <typename Number>
std::string ShortestText(Number value) {
  char text[64];
  const std::to_chars_result written = std::to_chars(text, text + sizeof(text), value);
  return std::string(text, written.ptr);
}

}  // namespace

std::string ExactNumber(double value) { return ShortestText(value); }
std::string ExactNumber(float value) { return ShortestText(value); }

std::string FoundInResamples(double found_fraction) {
  if (found_fraction >= 1) return "";
  // 1e-9: 100 * 0.29 is 28.999999999999996.
  const int found = static_cast<int>(std::floor(100 * found_fraction + 1e-9));
  return absl::StrFormat(" (found in %d%% of resamples)", found);
}

std::string DescribeHalfStep(const HalfStepWords& h) {
  if (!h.differs_at_first_row) return "never differs at the first row, so has no half step";
  const std::string found = FoundInResamples(h.found_fraction);
  if (!h.found) {
    return absl::StrFormat("not half its row-0 value by the last row, step %d%s", h.last_step,
                           found);
  }
  // Resamples still above half at the last row leave the interval open: a
  // ± over the others alone would close it.
  if (h.hi_after_last_row) {
    return absl::StrFormat("half its row-0 value at step %.1f, 68%% from %.1f to past step %d%s",
                           h.step, h.lo, h.last_step, found);
  }
  return absl::StrFormat("half its row-0 value at step %.1f ± %.1f%s", h.step, h.standard_error,
                         found);
}

std::string DrawableText(absl::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (size_t i = 0; i < value.size();) {
    uint32_t c = 0;
    const size_t n = Utf8SequenceLength(value, i, &c);
    if (n == 0 || IsNoncharacter(c)) {
      out.append("\xEF\xBF\xBD");  // U+FFFD
      i += n == 0 ? 1 : n;
    } else {
      out.append(value.data() + i, n);
      i += n;
    }
  }
  return out;
}

bool IsValidUtf8(absl::string_view value) {
  for (size_t i = 0; i < value.size();) {
    const size_t n = Utf8SequenceLength(value, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string CutText(absl::string_view value, size_t max_bytes) {
  if (value.size() <= max_bytes) return std::string(value);
  return absl::StrCat(Utf8Prefix(value, max_bytes - 3), "...");
}

absl::string_view Utf8Prefix(absl::string_view value, size_t max_bytes) {
  if (value.size() <= max_bytes) return value;
  // Back up to the start of a character.
  size_t cut = max_bytes;
  while (cut > 0 && (static_cast<unsigned char>(value[cut]) & 0xC0) == 0x80) --cut;
  return value.substr(0, cut);
}

std::string ShortQuote(absl::string_view value, size_t max_bytes) {
  const absl::string_view kept = Utf8Prefix(value, max_bytes);
  std::string quoted = absl::StrCat("\"", EscapeForQuote(kept), "\"");
  if (kept.size() < value.size()) {
    absl::StrAppend(&quoted, "\xE2\x80\xA6 (", value.size(), " bytes)");
  }
  return quoted;
}

}  // namespace dgrid
