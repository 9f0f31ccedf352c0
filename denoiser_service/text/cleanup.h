// The text clean-up steps of CLIP's simple_tokenizer, each matching the
// Python it replaces, so that a prompt gives the ids the model was trained on.
//
//   std::string text = NormalizeNfc(prompt);
//   text = UnescapeHtml(UnescapeHtml(text));  // "&amp;amp;" -> "&"
//   text = ToLowerCase(CollapseWhitespace(text));
//
// Inputs are UTF-8. Should they not be, CollapseWhitespace reads each
// ill-formed sequence as U+FFFD, so its output always is.
#ifndef DGRID_DENOISER_SERVICE_TEXT_CLEANUP_H_
#define DGRID_DENOISER_SERVICE_TEXT_CLEANUP_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace dgrid {

// Unicode NFC (ICU), the last step of ftfy.fix_text.
std::string NormalizeNfc(absl::string_view text);

// Python's html.unescape: numeric references (&#38; &#x26;, with or without
// ';', the HTML5 replacements for invalid ones) and the HTML5 named
// references, the longest known name first where ';' is missing.
std::string UnescapeHtml(absl::string_view text);

// Python's re.sub(r"\s+", " ", text).strip(): Python's Unicode whitespace.
std::string CollapseWhitespace(absl::string_view text);

// Python's str.lower(): full Unicode lower-casing, locale-independent (ICU).
std::string ToLowerCase(absl::string_view text);

// UAX #15's stream-safe limit: normalizing reorders each run of combining
// marks, at a cost that grows with the square of its length.
inline constexpr int kMaxNonStarters = 30;

// INVALID_ARGUMENT naming `field` when `text` (UTF-8) has a run of more than
// kMaxNonStarters non-starters (combining class not 0) in its characters'
// full decompositions, which no language writes: refused before
// NormalizeNfc sees it.
absl::Status CheckStreamSafe(absl::string_view field, absl::string_view text);

// Appends code point `c` (at most U+10FFFF) to `out` as UTF-8.
void AppendUtf8(char32_t c, std::string* out);

}  // namespace dgrid

#endif  // DGRID_DENOISER_SERVICE_TEXT_CLEANUP_H_
