#include "denoiser_service/text/cleanup.h"

#include <unicode/bytestream.h>
#include <unicode/casemap.h>
#include <unicode/normalizer2.h>
#include <unicode/stringpiece.h>
#include <unicode/uchar.h>
#include <unicode/utf8.h>

#include <algorithm>
#include <cstdint>
#include <iterator>

#include "absl/strings/str_cat.h"

namespace dgrid {
namespace {

struct NamedReference {
  const char* name;
  const char* value;
};

// Generated from Python's html.entities.html5; see the file's header.
constexpr NamedReference kNamedReferences[] = {
#include "denoiser_service/text/html5_entities.inc"
};

// The next code point at *pos, advancing past it; each maximal ill-formed
// subpart of the UTF-8 reads as one U+FFFD.
char32_t NextCodePoint(absl::string_view text, int64_t* pos) {
  const auto* bytes = reinterpret_cast<const uint8_t*>(text.data());
  const int64_t length = static_cast<int64_t>(text.size());
  UChar32 c;
  U8_NEXT_OR_FFFD(bytes, *pos, length, c);
  return static_cast<char32_t>(c);
}

// Python's str.isspace(): bidirectional class WS, B or S, or category Zs.
// (RE2's \s is ASCII-only, so the clean-up cannot leave this to a regex.)
bool IsPythonSpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

const char* FindNamedReference(absl::string_view name) {
  const auto* end = std::end(kNamedReferences);
  const auto* it = std::lower_bound(std::begin(kNamedReferences), end, name,
                                    [](const NamedReference& row, absl::string_view key) {
                                      return absl::string_view(row.name) < key;
                                    });
  return it != end && absl::string_view(it->name) == name ? it->value : nullptr;
}

// What Python's html module puts for numeric reference `num` (its
// _replace_charref): the code point, HTML5's replacement for it, U+FFFD, or
// nothing (-1).
int32_t NumericReferenceValue(uint32_t num) {
  // 0x80..0x9F name Windows-1252 characters, as browsers read them.
  static constexpr int32_t kC1[32] = {
      0x20AC, 0x81,   0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
      0x2039, 0x0152, 0x8D,   0x017D, 0x8F,   0x90,   0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
      0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x9D,   0x017E, 0x0178};
  if (num == 0) return 0xFFFD;
  if (num >= 0x80 && num <= 0x9F) return kC1[num - 0x80];
  if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) return 0xFFFD;
  const bool dropped = (num >= 0x01 && num <= 0x08) || num == 0x0B ||
                       (num >= 0x0E && num <= 0x1F) || num == 0x7F ||
                       (num >= 0xFDD0 && num <= 0xFDEF) || (num & 0xFFFE) == 0xFFFE;
  return dropped ? -1 : static_cast<int32_t>(num);
}

bool IsAsciiDigit(char c) { return c >= '0' && c <= '9'; }
bool IsAsciiHexDigit(char c) {
  return IsAsciiDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
int HexValue(char c) {
  if (IsAsciiDigit(c)) return c - '0';
  return (c | 0x20) - 'a' + 10;
}

// A numeric reference after "&#" at text[pos]: `#[0-9]+;?` or
// `#[xX][0-9a-fA-F]+;?`. Returns the end of the reference, or 0 if none.
size_t ReplaceNumericReference(absl::string_view text, size_t pos, std::string* out) {
  const bool hex = pos < text.size() && (text[pos] == 'x' || text[pos] == 'X');
  size_t i = hex ? pos + 1 : pos;
  const size_t digits_begin = i;
  // Saturates past the last code point; Python's int() has no such bound, but
  // every value past it reads as U+FFFD. (Python 3.11 refuses decimal
  // references longer than 4300 digits with ValueError.)
  uint32_t num = 0;
  for (; i < text.size() && (hex ? IsAsciiHexDigit(text[i]) : IsAsciiDigit(text[i])); ++i) {
    num = std::min<uint32_t>(num * (hex ? 16 : 10) + (hex ? HexValue(text[i]) : text[i] - '0'),
                             0x110000);
  }
  if (i == digits_begin) return 0;  // "&#" or "&#x" alone: not a reference
  if (i < text.size() && text[i] == ';') ++i;
  if (const int32_t value = NumericReferenceValue(num); value >= 0) AppendUtf8(value, out);
  return i;
}

// A named reference at text[pos] (just after '&'): up to 32 code points not
// in "\t\n\f <&#;", then an optional ';'. Returns its end, or 0 if none.
size_t ReplaceNamedReference(absl::string_view text, size_t pos, std::string* out) {
  int64_t end = static_cast<int64_t>(pos);
  int code_points = 0;
  size_t ascii_prefix = 0;  // leading ASCII bytes: only they can spell a name
  bool all_ascii = true;
  while (code_points < 32 && end < static_cast<int64_t>(text.size())) {
    const char c = text[end];
    if (c == '\t' || c == '\n' || c == '\f' || c == ' ' || c == '<' || c == '&' || c == '#' ||
        c == ';') {
      break;
    }
    int64_t next = end;
    NextCodePoint(text, &next);
    if (static_cast<unsigned char>(c) >= 0x80) all_ascii = false;
    if (all_ascii) ++ascii_prefix;
    end = next;
    ++code_points;
  }
  if (code_points == 0) return 0;
  if (end < static_cast<int64_t>(text.size()) && text[end] == ';') {
    ++end;
    ++code_points;
    if (all_ascii) ++ascii_prefix;
  }
  const absl::string_view name = text.substr(pos, end - pos);
  if (const char* value = FindNamedReference(name)) {
    out->append(value);
    return end;
  }
  // Python tries name[:x] for x = len(name)-1 down to 2 (in code points).
  const size_t longest = std::min<size_t>(code_points - 1, ascii_prefix);
  for (size_t x = longest; x >= 2; --x) {
    if (const char* value = FindNamedReference(name.substr(0, x))) {
      out->append(value);
      out->append(name.substr(x).data(), name.size() - x);
      return end;
    }
  }
  out->push_back('&');
  out->append(name.data(), name.size());
  return end;
}

}  // namespace

void AppendUtf8(char32_t c, std::string* out) {
  if (c < 0x80) {
    out->push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (c >> 6)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (c >> 12)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (c >> 18)));
    out->push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

absl::Status CheckStreamSafe(absl::string_view field, absl::string_view text) {
  // Counted in each character's full decomposition, as UAX #15 counts them:
  // U+0F73 is a starter itself but two marks once decomposed, and 1,365 of
  // them made one run of 2,730 for NFC to sort.
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* nfkd = icu::Normalizer2::getNFKDInstance(status);
  int run = 0;
  icu::UnicodeString decomposition;
  for (int64_t pos = 0; pos < static_cast<int64_t>(text.size());) {
    const int64_t at = pos;
    const UChar32 c = static_cast<UChar32>(NextCodePoint(text, &pos));
    if (!U_SUCCESS(status) || !nfkd->getDecomposition(c, decomposition)) {
      decomposition.setTo(c);
    }
    for (int32_t i = 0; i < decomposition.length(); i = decomposition.moveIndex32(i, 1)) {
      run = u_getCombiningClass(decomposition.char32At(i)) != 0 ? run + 1 : 0;
      if (run > kMaxNonStarters) {
        return absl::InvalidArgumentError(absl::StrCat(field, ": more than ", kMaxNonStarters,
                                                       " combining marks in a row (at byte ",
                                                       at, ")"));
      }
    }
  }
  return absl::OkStatus();
}

std::string NormalizeNfc(absl::string_view text) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(status);
  std::string out;
  icu::StringByteSink<std::string> sink(&out, static_cast<int32_t>(text.size()));
  if (U_SUCCESS(status)) {
    nfc->normalizeUTF8(0, icu::StringPiece(text.data(), static_cast<int32_t>(text.size())), sink,
                       nullptr, status);
  }
  // ICU's data is linked in; failing here means it is missing: keep the text.
  return U_SUCCESS(status) ? out : std::string(text);
}

std::string UnescapeHtml(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t amp = text.find('&', pos);
    if (amp == absl::string_view::npos) {
      out.append(text.data() + pos, text.size() - pos);
      break;
    }
    out.append(text.data() + pos, amp - pos);
    const size_t after = amp + 1;
    const size_t end = after < text.size() && text[after] == '#'
                           ? ReplaceNumericReference(text, after + 1, &out)
                           : ReplaceNamedReference(text, after, &out);
    if (end == 0) {  // not a reference: the '&' stays
      out.push_back('&');
      pos = after;
    } else {
      pos = end;
    }
  }
  return out;
}

std::string CollapseWhitespace(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  bool pending_space = false;
  int64_t pos = 0;
  while (pos < static_cast<int64_t>(text.size())) {
    const char32_t c = NextCodePoint(text, &pos);
    if (IsPythonSpace(c)) {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out.push_back(' ');
    pending_space = false;
    AppendUtf8(c, &out);
  }
  return out;
}

std::string ToLowerCase(absl::string_view text) {
  std::string out;
  icu::StringByteSink<std::string> sink(&out, static_cast<int32_t>(text.size()));
  UErrorCode status = U_ZERO_ERROR;
  // "" is ICU's root locale: no Turkish or Lithuanian rules, as in Python.
  icu::CaseMap::utf8ToLower("", 0, icu::StringPiece(text.data(), static_cast<int32_t>(text.size())),
                            sink, nullptr, status);
  return U_SUCCESS(status) ? out : std::string(text);
}

}  // namespace dgrid
